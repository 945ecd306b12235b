"""The runtime's side of the handler contract, which lives in :mod:`hydro_serving.sdk`.

Kept so that code written against ``hydro_serving.runtime.api`` still imports; new code imports
the sdk. The runtime serves a template only through :mod:`hydro_serving.runtime.adapters`.
"""

from hydro_serving.sdk.context import InvocationContext, LoadContext, RawResponse
from hydro_serving.sdk.model import find_model_file

__all__ = ["InvocationContext", "LoadContext", "RawResponse", "find_model_file"]
