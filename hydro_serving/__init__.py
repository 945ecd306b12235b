"""Hydro Serving: every model becomes a function that scales to zero; pipelines are router functions."""

__version__ = "0.1.0"
