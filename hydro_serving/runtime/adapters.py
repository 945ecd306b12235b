"""One adapter per template kind, chosen once when the template loads (of-watchdog's runner-per-mode).

A ``model`` is a :class:`~hydro_serving.sdk.ModelHandler` (``predict`` inline on the request thread,
V2 straight to ``infer_v2``, batching through ``predict_batch``); a ``function`` or ``router`` is a
:class:`~hydro_serving.sdk.FunctionHandler` (``handle(payload, context)`` on the executor's pool, any
method and sub-path, raw bodies). :mod:`~hydro_serving.runtime.service` calls the adapter and never
asks what kind it serves or what methods a handler happens to have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from hydro_serving.contract import Signature
from hydro_serving.errors import ConfigError, HandlerError
from hydro_serving.sdk.context import InvocationContext
from hydro_serving.sdk.function import FunctionHandler
from hydro_serving.sdk.model import ModelHandler
from hydro_serving.templates import Template

Call = Callable[[], Any]


class Adapter:
    """How the runtime calls one kind of handler; subclasses fix the kind's rules as class attributes."""

    base: ClassVar[type] = object  # the sdk class a template of this kind must subclass
    accepts_raw: ClassVar[bool] = False  # any method, any sub-path, bodies that are not JSON
    inline: ClassVar[bool] = False  # run on the request thread (CPU-bound, in memory) instead of the pool
    needs_handler_dir: ClassVar[bool] = False  # the user's folder with handler.py must exist
    several_workers: ClassVar[bool] = False  # stateless and CPU-bound: one worker process per core helps
    fast_path: ClassVar[str | None] = None  # "model" / "router": POST / skips Flask (runtime/fastpath.py)

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def call(self, payload: Any, context: InvocationContext) -> Call:
        raise NotImplementedError

    def call_v2(self, arrays: Mapping[str, Any], context: InvocationContext) -> Call:
        raise NotImplementedError

    @property
    def predict_batch(self) -> Callable[[list[Any]], list[Any]] | None:
        """The batch entry point when this kind batches (models), else None."""
        return None

    @property
    def signature(self) -> Signature | None:
        """What the loaded handler reports about its inputs (when the spec and the store declare none)."""
        return None

    def close(self) -> None:
        self.handler.close()


class ModelAdapter(Adapter):
    base = ModelHandler
    inline = True
    several_workers = True
    fast_path = "model"

    def call(self, payload: Any, context: InvocationContext) -> Call:
        return lambda: self.handler.predict(payload)

    def call_v2(self, arrays: Mapping[str, Any], context: InvocationContext) -> Call:
        return lambda: self.handler.infer_v2(arrays)

    @property
    def predict_batch(self) -> Callable[[list[Any]], list[Any]] | None:
        return self.handler.predict_batch

    @property
    def signature(self) -> Signature | None:
        found = self.handler.signature
        return found if isinstance(found, Signature) else None


class FunctionAdapter(Adapter):
    base = FunctionHandler
    accepts_raw = True
    needs_handler_dir = True

    def call(self, payload: Any, context: InvocationContext) -> Call:
        return lambda: self.handler.handle(payload, context)

    @property
    def signature(self) -> Signature | None:
        found = self.handler.signature  # FunctionHandler's attribute (a router reports its pipeline's)
        return found if isinstance(found, Signature) else None

    def call_v2(self, arrays: Mapping[str, Any], context: InvocationContext) -> Call:
        columnar = {name: array.tolist() for name, array in arrays.items()}
        return lambda: _as_outputs(self.handler.handle(columnar, context))


class RouterAdapter(FunctionAdapter):
    """The router template: the package's own code, run inline on the request thread.

    Inline, unlike a user's function, because the router bounds itself: every stage call is bounded
    by the request's deadline (the runtime's timeout, or a shorter ``X-Timeout``) and the router
    answers 504 itself when it runs out, while shadows and prewarms run on its own pools. The pool's
    hand-off (a Future, two thread wake-ups) was a fifth of a router's CPU per request (issue 18).
    """

    needs_handler_dir = False  # the router's code is the package's; its chain is in the spec
    inline = True
    fast_path = "router"


ADAPTERS: dict[str, type[Adapter]] = {"model": ModelAdapter, "function": FunctionAdapter, "router": RouterAdapter}


def adapter_class(template: Template) -> type[Adapter]:
    """The adapter for the template's kind (the registry has already refused any other kind)."""
    return ADAPTERS[template.kind]


def check_entrypoint(template: Template, handler_class: Any) -> None:
    """Refuse an entrypoint that does not stand on the sdk class its kind needs, before it is built."""
    base = adapter_class(template).base
    if not (isinstance(handler_class, type) and issubclass(handler_class, base)):
        raise ConfigError(f"template '{template.name}' (kind {template.kind}): {template.entrypoint} must be a "
                          f"subclass of {base.__module__}.{base.__name__}", field="entrypoint")


def _as_outputs(result: Any) -> dict[str, Any]:
    """A custom function's V2 answer: a dict is one tensor per key, anything else one tensor 'output'."""
    if isinstance(result, Mapping):
        return dict(result)
    if result is None:
        raise HandlerError("the function returned nothing to send as a V2 output")
    return {"output": result}
