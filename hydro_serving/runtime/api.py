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
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from hydro_serving.stack.model import FunctionSpec

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


@dataclass
class LoadContext:
    """What a handler may know when it loads: its spec, options, signature and where files are.

    ``metrics_registry`` is the runtime's own Prometheus registry (None outside a server): a
    handler that registers its series there (the router's per-stage metrics) has them served on
    the replica's ``/metrics`` beside the runtime's, with no second endpoint or global registry.
    """

    spec: FunctionSpec
    model_dir: Path | None
    handler_dir: Path | None
    metrics_registry: CollectorRegistry | None = None

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


@runtime_checkable
class FunctionHandler(Protocol):
    """A template for ``kind: function`` or ``router``: loaded once, then ``handle`` per request.

    ``handle`` sees the :class:`InvocationContext` (headers, raw body, deadline) because custom
    code and the router need more than the payload; it may return JSON-able data, ``str``,
    ``bytes`` or a :class:`RawResponse`.
    """

    def load(self, model_dir: Path | None, context: LoadContext) -> None: ...

    def handle(self, payload: Any, context: InvocationContext) -> Any: ...


@runtime_checkable
class BatchingHandler(Protocol):
    """A model handler that can merge many requests into one framework call (adaptive batching).

    ``predict_batch`` returns one result per payload, in order; an element that is an exception
    instance fails only that request (one caller's bad row must not fail its batch neighbours).
    """

    def predict_batch(self, payloads: list[Any]) -> list[Any]: ...


def find_model_file(path: Path, patterns: tuple[str, ...] | list[str], template: str) -> Path:
    """The model file to load: ``path`` itself, or the single file in the directory matching ``patterns``.

    A directory with none or several matches is an error that lists what was found, because
    silently picking one of two ``*.pkl`` files would serve the wrong model.
    """
    from hydro_serving.errors import ConfigError

    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"model path {path} does not exist", field="model")
    matches = sorted({p for pattern in patterns for p in path.rglob(pattern) if p.is_file()})
    if len(matches) == 1:
        return matches[0]
    wanted = ", ".join(patterns) or "(no patterns)"
    if not matches:
        present = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise ConfigError(f"no model file matching {wanted} for template '{template}' in {path} "
                          f"(found: {present})", field="model")
    names = ", ".join(str(p.relative_to(path)) for p in matches[:10])
    raise ConfigError(f"several model files match {wanted} in {path} ({names}); point 'model' at one of them",
                      field="model")
