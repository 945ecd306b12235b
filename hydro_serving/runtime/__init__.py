"""The runtime server inside every function: loads a template's handler once, serves it over HTTP.

Run it with ``python -m hydro_serving.runtime --spec SPEC.json --port N``; build the WSGI app
in-process with :func:`hydro_serving.runtime.app.create_app`. Submodules are imported lazily so
templates can import :mod:`hydro_serving.runtime.api` without pulling in Flask or gunicorn.
"""
