"""Monitoring through a real gateway process and a real function replica, with a real webhook receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.gateway_fixtures import Gateway, write_handler

SCORER = '''
def handle(payload, context):
    rows = payload if isinstance(payload, list) else [payload]
    return [{"label": r["x"] > 0, "score": round(r["x"] * 0.5 + 0.1, 6)} for r in rows]
'''
SIGNATURE = {
    "inputs": [{"name": "x", "dtype": "float64", "shape": [-1]}, {"name": "y", "dtype": "float64", "shape": [-1]},
               {"name": "plan", "dtype": "string", "shape": [-1]}],
    "outputs": [{"name": "label", "dtype": "bool", "shape": [-1]}, {"name": "score", "dtype": "float64",
                                                                   "shape": [-1]}],
}


class Receiver:
    """A webhook receiver: a real HTTP server on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0, plans: tuple[str, ...] = ("a", "b")) -> list[dict]:
    return [{"x": round(float(rng.normal(shift, 1)), 6), "y": round(float(rng.normal(5, 2)), 6),
             "plan": str(rng.choice(plans))} for _ in range(n)]


def _deploy(gateway: Gateway, tmp_path: Path, receiver: Receiver, sample: float = 1.0) -> None:
    folder = write_handler(tmp_path / "scorer", SCORER)
    gateway.deploy(gateway.python_spec("scorer", folder, signature=SIGNATURE, monitoring={
        "sample": sample, "window": {"rows": 60, "time": "1h"}, "alert": receiver.url}))


def _windows(gateway: Gateway, n: int) -> dict[str, Any]:
    gateway.wait_for(lambda: len(gateway.admin("GET", "/system/monitoring/scorer")[1]["windows"]) >= n,
                     timeout=30, what=f"{n} windows")
    return gateway.admin("GET", "/system/monitoring/scorer")[1]


def test_drift_through_the_gateway(gateway: Gateway, tmp_path: Path, receiver: Receiver) -> None:
    _deploy(gateway, tmp_path, receiver)
    rng = np.random.default_rng(5)
    request_ids = []
    for shift, plans in ((0.0, ("a", "b")), (0.0, ("a", "b")), (2.5, ("c",))):
        for _ in range(6):
            status, headers, body = gateway.invoke("scorer", _rows(rng, 10, shift, plans))
            assert status == 200, body
            assert len(headers["X-Request-Id"]) == 32
            request_ids.append((headers["X-Request-Id"], body))
    view = _windows(gateway, 3)
    first, second, third = view["windows"]
    assert first["baseline"] and not second["drift"] and third["drift"]
    assert third["drifted_fields"] == ["x", "plan"]
    table = {f["field"]: f for f in view["window"]["fields"]}
    assert set(table) == {"x", "y", "plan"} and table["x"]["drifted"] and not table["y"]["drifted"]
    assert table["x"]["method"] == "ks" and table["x"]["p_value"] < view["window"]["corrected_alpha"]
    gateway.wait_for(lambda: receiver.received, what="the webhook")
    assert [m["event"] for m in receiver.received] == ["drift_started"]
    assert receiver.received[0]["drifted_fields"] == ["x", "plan"]

    status, hist = gateway.admin("GET", "/system/monitoring/scorer/histograms?window=3")
    x = next(h for h in hist["histograms"] if h["field"] == "x")
    assert status == 200 and sum(x["reference"]) == 60 and sum(x["production"]) == 60
    metrics = gateway.metrics()
    assert 'hydro_drift_detected{field="x",function="scorer"} 1.0' in metrics
    assert 'hydro_drift_detected{field="y",function="scorer"} 0.0' in metrics
    assert 'hydro_drift_p_value{field="x",function="scorer",stat="ks"}' in metrics
    assert 'hydro_monitor_samples_dropped_total' in metrics or "hydro_monitor_queue_depth" in metrics

    # ground truth for the third window's requests: the label is the sign of x, so accuracy is 1.0
    labels = [{"request_id": rid, "row": i, "label": rec["label"]} for rid, body in request_ids[12:]
              for i, rec in enumerate(body)]
    status, out = gateway.admin("POST", "/system/feedback/scorer", {"labels": labels})
    assert status == 202 and out == {"function": "scorer", "accepted": 60, "matched": 60}
    view = gateway.admin("GET", "/system/monitoring/scorer")[1]
    quality = view["windows"][2]["quality"]
    assert quality["task"] == "classification" and quality["n"] == 60 and quality["accuracy"] == 1.0

    # the CLI: `hydro feedback` (a wrong label this time) and `hydro monitor` print the same state
    rid, body = request_ids[-1]
    code, out = _hydro(gateway, "feedback", "scorer", "--request-id", rid, "--label", json.dumps(not body[0]["label"]))
    assert code == 0 and "1 label(s) stored for scorer, 1 joined" in out
    code, out = _hydro(gateway, "monitor", "scorer")
    assert code == 0, out
    assert "window 3: 60 rows vs first window after deploy; DATASET DRIFT: 2 of 3 fields" in out
    x_line = next(line for line in out.splitlines() if line.strip().startswith("x "))
    assert x_line.split()[1:3] == ["numeric", "ks"] and x_line.endswith("YES")
    assert next(line for line in out.splitlines() if line.strip().startswith("y ")).endswith("no")
    assert "acc 0.983" in out  # 59 of 60 after the corrected label
    code, out = _hydro(gateway, "monitor", "scorer", "--window", "2", "--json")
    assert code == 0 and json.loads(out)["window"]["seq"] == 2
    code, out = _hydro(gateway, "monitor", "nope")
    assert code != 0 and "nope" in out and "Traceback" not in out


def _hydro(gateway: Gateway, *args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args, "--gateway", gateway.url,
                           "--state", str(gateway.state_dir)], capture_output=True, text=True, timeout=60,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_ids_opt_out_unhealthy_rows_and_hostile_callers(gateway: Gateway, tmp_path: Path,
                                                        receiver: Receiver) -> None:
    _deploy(gateway, tmp_path, receiver)
    status, headers, _ = gateway.invoke("scorer", [{"x": 1.0, "y": 2.0, "plan": "a"}],
                                        headers={"X-Request-Id": "order-17"})
    assert status == 200 and headers["X-Request-Id"] == "order-17"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    _, headers, _ = gateway.invoke("scorer", [{"x": 1.0, "y": 2.0, "plan": "a"}],
                                   headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert headers["X-Request-Id"] == trace
    _, headers, _ = gateway.invoke("scorer", [{"x": 5.0, "y": 2.0, "plan": "a"}],
                                   headers={"X-Hydro-Monitor": "off", "X-Request-Id": "private"})
    _, headers, _ = gateway.invoke("scorer", [{"x": 1.0, "y": 2.0, "plan": "a"}],
                                   headers={"X-Request-Id": "x" * 300})
    assert len(headers["X-Request-Id"]) == 32  # an id too long to hand back is replaced
    status, _, body = gateway.invoke("scorer", [{"x": "text", "y": 2.0, "plan": "a"}])
    assert status == 400  # refused by the runtime's signature check; the monitor records the row as unhealthy

    def stored() -> list[dict[str, Any]]:
        return gateway.admin("GET", "/system/monitoring/scorer/rows?limit=100")[1]["rows"]

    gateway.wait_for(lambda: len(stored()) == 4, what="4 sampled rows")
    rows = stored()
    assert {r["request_id"] for r in rows} >= {"order-17", trace} and "private" not in {r["request_id"] for r in rows}
    bad = gateway.admin("GET", "/system/monitoring/scorer/rows?unhealthy=true")[1]["rows"]
    assert len(bad) == 1 and {f["check"] for f in bad[0]["failures"]} == {"wrong_type", "error_status"}

    # anonymous callers, malformed requests, unknown functions: JSON errors naming the field
    assert gateway.request("GET", "/system/monitoring/scorer")[0] == 401
    assert gateway.request("POST", "/system/feedback/scorer", {"labels": []})[0] == 401
    cases = [
        (b"{not json", "(body)"),
        ({"labels": "x"}, "labels"),
        ({"labels": [{"request_id": "order-17"}]}, "labels[0].label"),
        ({"labels": [{"request_id": "", "label": 1}]}, "labels[0].request_id"),
        ({"labels": [{"request_id": "a", "label": {"$ne": 1}}]}, "labels[0].label"),
        ({"labels": [{"request_id": "a", "label": 1, "row": -1}]}, "labels[0].row"),
        ({"labels": [{"request_id": "a", "label": 1, "sql": "drop"}]}, "labels[0].sql"),
        ({"labels": [{"request_id": "a", "label": 1}] * 10_001}, "labels"),
    ]
    for body, field in cases:
        status, out = gateway.admin("POST", "/system/feedback/scorer", body)
        assert status == 400 and out["field"] == field and "Traceback" not in json.dumps(out), (body, out)
    status, out = gateway.admin("POST", "/system/feedback/nope", {"labels": [{"request_id": "a", "label": 1}]})
    assert status == 404 and out["function"] == "nope"
    for query, field in (("?window=x", "window"), ("?limit=0", "limit"), ("?window=99", "window")):
        status, out = gateway.admin("GET", f"/system/monitoring/scorer{query}")
        assert status in (400, 404) and out["field"] == field
    lines = tmp_path / "labels.jsonl"
    lines.write_text(json.dumps({"request_id": "order-17", "label": True}) + "\n"
                     + json.dumps({"request_id": trace, "label": False}) + "\n")
    code, out = _hydro(gateway, "feedback", "scorer", "--file", str(lines))
    assert code == 0 and "2 label(s) stored for scorer, 2 joined" in out
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not json at all")
    code, out = _hydro(gateway, "feedback", "scorer", "--file", str(garbage))
    assert code != 0 and "--file" in out and "Traceback" not in out
    code, out = _hydro(gateway, "feedback", "scorer", "--file", str(tmp_path / "empty.json"))
    assert code != 0 and "Traceback" not in out
    status, listing = gateway.admin("GET", "/system/monitoring")
    assert status == 200 and [f["function"] for f in listing] == ["scorer"]
    doc = gateway.request("GET", "/openapi.json")[2]
    assert "/system/monitoring/{name}" in doc["paths"] and "post" in doc["paths"]["/system/feedback/{name}"]


def test_sample_zero_samples_nothing(gateway: Gateway, tmp_path: Path, receiver: Receiver) -> None:
    _deploy(gateway, tmp_path, receiver, sample=0.0)
    for _ in range(3):
        assert gateway.invoke("scorer", [{"x": 1.0, "y": 2.0, "plan": "a"}])[0] == 200
    assert gateway.admin("GET", "/system/monitoring/scorer/rows")[1]["rows"] == []
