"""OpenTelemetry export: spans recorded from the ids the platform propagates, checked with the SDK's in-memory
exporter, and end to end against a real OTLP/HTTP receiver (written here) fed by a real gateway, router and
replicas."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sklearn.linear_model import LogisticRegression

from hydro_serving import telemetry
from hydro_serving.store import open_store
from tests.gateway_fixtures import write_handler

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    saved = dict(telemetry._state)
    telemetry.use_exporter(exporter)
    yield exporter
    telemetry._state.clear()
    telemetry._state.update(saved)


def test_off_without_an_endpoint() -> None:
    assert not telemetry.enabled({})
    assert telemetry.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert telemetry.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})


@pytest.mark.parametrize("value", [None, "", "garbage", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
                                   f"00-{TRACE[:-1]}x-{PARENT}-01", f"00-{TRACE}-{PARENT}"])
def test_invalid_traceparents_are_ignored(value: str | None) -> None:
    assert telemetry.parse_traceparent(value) is None
    hop = telemetry.Hop.continuing(value)
    assert hop.parent is None and len(hop.trace_id) == 32 and telemetry.parse_traceparent(hop.traceparent)


def test_hops_record_spans_with_our_ids(memory: InMemorySpanExporter) -> None:
    hop = telemetry.Hop.continuing(f"00-{TRACE}-{PARENT}-01")
    assert hop.trace_id == TRACE and hop.parent == PARENT
    forwarded = hop.traceparent
    hop.end("hydro-gateway", "POST /function/f", {"hydro.function": "f", "hydro.cold_start": True,
                                                  "ignored": {"not": "a scalar"}}, error=True)
    child = telemetry.Hop.continuing(forwarded)
    child.end("f", "POST /", {"hydro.model_version": "m:3"})
    telemetry.record("pipe", "stage 1 f", TRACE, telemetry.new_span_id(), child.span_id, telemetry.now_ns(),
                     kind="client")
    first, second, third = memory.get_finished_spans()
    assert f"{first.context.trace_id:032x}" == TRACE and f"{first.context.span_id:016x}" == hop.span_id
    assert f"{first.parent.span_id:016x}" == PARENT and first.kind == SpanKind.SERVER
    assert first.resource.attributes["service.name"] == "hydro-gateway"
    assert dict(first.attributes) == {"hydro.function": "f", "hydro.cold_start": True}
    assert first.status.is_ok is False
    assert f"{second.parent.span_id:016x}" == hop.span_id and second.attributes["hydro.model_version"] == "m:3"
    assert third.kind == SpanKind.CLIENT and f"{third.parent.span_id:016x}" == child.span_id


class Collector:
    """A real OTLP/HTTP trace receiver: decodes ExportTraceServiceRequest protobufs into plain dicts."""

    def __init__(self) -> None:
        spans: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(raw)
                for rs in request.resource_spans:
                    service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            attrs = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}
                            spans.append({"service": service, "name": span.name, "trace": span.trace_id.hex(),
                                          "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                          "kind": span.kind, "attrs": attrs, "path": self.path})
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.spans = spans
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


IDENTITY = '''
def handle(payload, context):
    return payload
'''
SIGNATURE = {"inputs": [{"name": n, "dtype": "float64", "shape": [-1]} for n in ("a", "b")],
             "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]}]}


@pytest.mark.slow
def test_spans_of_gateway_router_and_replicas_join_in_one_trace(gateway_factory: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    collector = Collector()
    try:
        store_url = f"file://{tmp_path / 'store'}"
        x = np.random.default_rng(0).normal(size=(200, 2))
        joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), tmp_path / "model.joblib")
        open_store(store_url).upload(tmp_path / "model.joblib", "scorer", framework="sklearn", signature=SIGNATURE)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        gateway = gateway_factory()
        scale = {"min": 0, "max": 1, "idle": 300, "concurrency": 8}
        gateway.deploy(gateway.python_spec("prep", write_handler(tmp_path / "prep", IDENTITY)))
        gateway.deploy({"name": "scorer", "lang": "sklearn", "model": "scorer:1", "signature": SIGNATURE,
                        "environment": {"HYDRO_STORE": store_url}, "options": {"outputs": {"label": "label"}},
                        "scale": scale})
        gateway.deploy({"name": "pipe", "lang": "router", "scale": scale,
                        "chain": ["prep", {"variants": {"scorer": 100}}]})
        status, headers, body = gateway.invoke("pipe", [{"a": 1.0, "b": 0.5}],
                                               headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert status == 200, body
        assert headers["X-Request-Id"] == TRACE

        def ours() -> list[dict[str, Any]]:
            return [s for s in collector.spans if s["trace"] == TRACE]

        gateway.wait_for(lambda: len(ours()) >= 8, timeout=30, what="8 spans at the OTLP receiver")
    finally:
        collector.close()
    spans = ours()
    assert all(s["path"] == "/v1/traces" for s in spans)
    by_id = {s["id"]: s for s in spans}
    gw = {s["attrs"]["hydro.function"]: s for s in spans if s["service"] == "hydro-gateway"}
    assert set(gw) == {"pipe", "prep", "scorer"} and gw["pipe"]["parent"] == PARENT
    router = next(s for s in spans if s["service"] == "pipe" and s["name"] == "pipeline pipe")
    assert router["parent"] == gw["pipe"]["id"]
    stages = sorted((s for s in spans if s["service"] == "pipe" and s["name"].startswith("stage")),
                    key=lambda s: s["attrs"]["hydro.stage"])
    assert [(s["attrs"]["hydro.stage"], s["attrs"]["hydro.variant"]) for s in stages] == [(1, "prep"), (2, "scorer")]
    assert all(s["parent"] == router["id"] and "hydro.cold_start" in s["attrs"] for s in stages)
    assert gw["prep"]["parent"] == stages[0]["id"] and gw["scorer"]["parent"] == stages[1]["id"]
    assert gw["scorer"]["attrs"]["hydro.pipeline"] == "pipe" and gw["scorer"]["attrs"]["hydro.stage"] == "2"
    replica = {s["service"]: s for s in spans if s["service"] in ("prep", "scorer")}
    assert replica["prep"]["parent"] == gw["prep"]["id"] and replica["scorer"]["parent"] == gw["scorer"]["id"]
    assert replica["scorer"]["attrs"]["hydro.model_version"] == "scorer:1"
    assert all(s["parent"] in by_id or s["parent"] == PARENT for s in spans)
    assert os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == collector.url
