"""What the runtime hands a handler: a :class:`LoadContext` once, an :class:`InvocationContext` per request.

Plain data, no HTTP objects: the runtime owns transport, errors, health and limits, so a template
(or a user's ``handle``) sees headers, the body, the deadline and its options, and shapes its answer
through ``response_headers``/``status`` or a :class:`RawResponse`, never through a request object.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydro_serving.stack.model import FunctionSpec
from hydro_serving.templates import Template

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


@dataclass
class LoadContext:
    """What a handler may know when it loads: its spec, options, template, signature and where files are.

    ``metrics_registry`` is the runtime's own Prometheus registry (None outside a server): a
    handler that registers its series there (the router's per-stage metrics) has them served on
    the replica's ``/metrics`` beside the runtime's, with no second endpoint or global registry.
    ``template`` is the template being served (None when a test loads a handler by hand: the
    handler then looks it up by ``spec.lang``).
    """

    spec: FunctionSpec
    model_dir: Path | None
    handler_dir: Path | None
    metrics_registry: CollectorRegistry | None = None
    template: Template | None = None

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
