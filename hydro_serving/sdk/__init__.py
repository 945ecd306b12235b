"""The template SDK: what model templates and users' functions import, and nothing about HTTP.

* :class:`ModelHandler` - a model template is one subclass with ``load_model`` and ``predict``;
  the base class finds the model file from ``template.yml``'s ``model_patterns`` and checks
  ``options`` against its schema before ``load_model`` runs;
* :class:`FunctionHandler` and ``handle(payload, context)`` with :class:`InvocationContext` -
  custom functions and the router;
* :mod:`hydro_serving.sdk.tabular` and :mod:`hydro_serving.sdk.outputs` - JSON/V2 requests to
  feature matrices, and the shared ``method``/``outputs``/``classes`` options
  (:class:`~hydro_serving.sdk.outputs.LabelProbaModel`).

The runtime owns transport, errors, health and limits; nothing here imports Flask, the gateway
or the store's backends.
"""

from hydro_serving.sdk.context import InvocationContext, LoadContext, RawResponse
from hydro_serving.sdk.function import FunctionHandler
from hydro_serving.sdk.model import ModelHandler, find_model_file

__all__ = ["FunctionHandler", "InvocationContext", "LoadContext", "ModelHandler", "RawResponse", "find_model_file"]
