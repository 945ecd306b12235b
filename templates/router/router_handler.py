"""The router template's entrypoint: the handler lives in the installed package.

The engine (variants, deadlines, breakers, shadows) is ordinary package code so that it is
tested and versioned with the runtime; the template only names it.
"""

from hydro_serving.router.handler import RouterHandler

__all__ = ["RouterHandler"]
