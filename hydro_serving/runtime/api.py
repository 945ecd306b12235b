"""The interface between the runtime server and the code it serves (templates and user functions).

The runtime owns HTTP, errors, health, limits and metrics; a template never sees a request object.
Three kinds of code are served, named by ``kind`` in a template's ``template.yml``:

* ``model``: a class with ``load(model_dir, context)`` and ``predict(payload)`` (and optionally
  ``infer_v2(arrays) -> {name: array}`` and ``predict_batch(payloads) -> results`` for batching);
* ``function``: the user's ``handle(payload, context)`` in ``<handler>/handler.py``;
* ``router``: like a model class, but ``load`` gets the spec and ``predict`` the context too.

A handler signals a caller's mistake by raising :class:`hydro_serving.errors.ValidationError`
(400, naming the field); any other exception becomes a 500 whose details go only to the log.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hydro_serving.stack.model import FunctionSpec


@dataclass
class LoadContext:
    """What a handler may know when it loads: its spec, options, signature and where files are."""

    spec: FunctionSpec
    model_dir: Path | None
    handler_dir: Path | None

    @property
    def options(self) -> Mapping[str, Any]:
        return self.spec.options


@dataclass
class InvocationContext:
    """One request as the handler may see it: headers in, headers out, deadline, raw body.

    ``response_headers`` and ``status`` let a function (the router, say) shape its response
    without touching HTTP objects; ``deadline`` is a ``time.monotonic()`` instant.
    """

    spec: FunctionSpec
    headers: Mapping[str, str]
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)
    path: str = "/"
    method: str = "POST"
    deadline: float | None = None
    response_headers: MutableMapping[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass
class RawResponse:
    """Return this to send bytes as they are (no JSON re-encoding): the router's pass-through."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ModelHandler(Protocol):
    """A template's model class: built with no arguments, loaded once, then called per request."""

    def load(self, model_dir: Path | None, context: LoadContext) -> None: ...

    def predict(self, payload: Any) -> Any: ...
