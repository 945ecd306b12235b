"""OpenTelemetry export of the gateway's, the router's and the runtime's spans, joined by W3C ``traceparent``.

Off unless ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and the
``otel`` extra is installed): then every process exports its spans over OTLP/HTTP with a batching
processor, configured by the standard ``OTEL_*`` variables (headers, timeout, batch delay).

Spans are **recorded after the fact** from the ids the platform already propagates: the router has
always created a span id per stage call (``hydro_serving.router.tracing``), the gateway gives each
forwarded request a span id of its own in the ``traceparent`` it forwards, and the runtime takes its
parent from the ``traceparent`` it receives. So nothing about how requests travel changes when
export is on; :func:`record` only hands a finished span to the exporter (a no-op when export is
off). The exporter is created lazily per process, after any fork (zygotes, gunicorn workers), so
its threads always belong to the process that exports.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("hydro.telemetry")

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SCOPE = "hydro_serving"

_lock = threading.Lock()
_state: dict[str, Any] = {"pid": None, "processor": None, "enabled": None, "enabled_pid": None, "resources": {}}


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether spans are exported by this process (decided once per process from its environment)."""
    if env is not None:
        return any(env.get(k) for k in ENDPOINT_ENVS)
    pid = os.getpid()
    if _state.get("enabled_pid") != pid:  # once per process (a forked child decides again)
        _state["enabled"] = any(os.environ.get(k) for k in ENDPOINT_ENVS)
        _state["enabled_pid"] = pid
    return bool(_state["enabled"])


def _processor() -> Any:
    """This process's span processor (BatchSpanProcessor over OTLP/HTTP), created on first use."""
    pid = os.getpid()
    if _state["pid"] == pid and _state["processor"] is not None:
        return _state["processor"]
    with _lock:
        if _state["pid"] == pid and _state["processor"] is not None:
            return _state["processor"]
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
                        "(pip install 'hydro-serving[otel]'); spans are not exported")
            _state.update(pid=pid, processor=None, enabled=False, enabled_pid=pid)
            return None
        processor = BatchSpanProcessor(OTLPSpanExporter())
        _state.update(pid=pid, processor=processor, resources={})
        atexit.register(processor.shutdown)
        return processor


def use_exporter(exporter: Any) -> None:
    """Export this process's spans synchronously to ``exporter`` (tests: the SDK's InMemorySpanExporter)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    _state.update(pid=os.getpid(), processor=SimpleSpanProcessor(exporter), enabled=True, enabled_pid=os.getpid(),
                  resources={})


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """``(trace_id, span_id, flags)`` of a valid ``traceparent``, else None."""
    if not value or len(value) < 55:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        if int(parts[1], 16) == 0 or int(parts[2], 16) == 0:
            return None
        int(parts[3], 16)
    except ValueError:
        return None
    return parts[1].lower(), parts[2].lower(), parts[3].lower()


def new_span_id() -> str:
    while True:
        value = os.urandom(8).hex()
        if value != "0" * 16:
            return value


def now_ns() -> int:
    return time.time_ns()


def record(service: str, name: str, trace_id: str, span_id: str, parent_span_id: str | None, start_ns: int,
           end_ns: int | None = None, attributes: Mapping[str, Any] | None = None, kind: str = "server",
           error: bool = False) -> None:
    """Export one finished span (a no-op when export is off; never raises into the caller)."""
    if not enabled():
        return
    try:
        processor = _processor()
        if processor is None:
            return
        processor.on_end(_readable(service, name, trace_id, span_id, parent_span_id, start_ns,
                                   end_ns or now_ns(), attributes or {}, kind, error))
    except Exception as exc:  # telemetry must never fail a request
        log.warning("span %s not exported: %s", name, exc)


def _readable(service: str, name: str, trace_id: str, span_id: str, parent_span_id: str | None, start_ns: int,
              end_ns: int, attributes: Mapping[str, Any], kind: str, error: bool) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
    from opentelemetry.trace.status import Status, StatusCode

    resources: dict[str, Any] = _state["resources"]
    resource = resources.get(service)
    if resource is None:
        resource = resources[service] = Resource.create({"service.name": service})
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = (SpanContext(int(trace_id, 16), int(parent_span_id, 16), is_remote=True,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED)) if parent_span_id else None)
    clean = {k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float)}
    return ReadableSpan(name=name, context=context, parent=parent, resource=resource, attributes=clean,
                        kind={"server": SpanKind.SERVER, "client": SpanKind.CLIENT,
                              "internal": SpanKind.INTERNAL}[kind],
                        status=Status(StatusCode.ERROR) if error else Status(StatusCode.UNSET),
                        start_time=start_ns, end_time=end_ns, instrumentation_scope=InstrumentationScope(SCOPE))


class Hop:
    """The span of one forwarded request: its id goes into the ``traceparent`` sent on, so the next
    process's span is its child; :meth:`end` exports it."""

    __slots__ = ("parent", "span_id", "start", "trace_id")

    def __init__(self, trace_id: str, incoming: str | None) -> None:
        parsed = parse_traceparent(incoming)
        self.trace_id = trace_id
        self.parent = parsed[1] if parsed is not None and parsed[0] == trace_id else None
        self.span_id = new_span_id()
        self.start = now_ns()

    @classmethod
    def continuing(cls, incoming: str | None) -> Hop:
        """A span continuing the incoming trace (a new trace when there is none)."""
        parsed = parse_traceparent(incoming)
        return cls(parsed[0] if parsed is not None else os.urandom(16).hex(), incoming)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

    def end(self, service: str, name: str, attributes: Mapping[str, Any], error: bool = False) -> None:
        record(service, name, self.trace_id, self.span_id, self.parent, self.start, now_ns(), attributes,
               "server", error)


@functools.lru_cache(maxsize=64)
def model_version(model_path: Any, model_ref: str | None) -> str:
    """``name:version`` of a store model (from the cache's manifest beside its files), else the ref as declared.

    Cached: a replica serves one model version for its whole life.
    """
    if model_path is not None:
        try:
            from hydro_serving.store.cache import manifest_of

            manifest = manifest_of(model_path)
            if manifest is not None:
                return f"{manifest.name}:{manifest.version}"
        except Exception:  # a local development model, an unreadable cache: the declared ref is all we know
            pass
    return model_ref or ""
