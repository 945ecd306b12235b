"""The monitor's worker end to end in-process: real SQLite, real statistics, a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from hydro_serving.monitor.sampler import tap
from hydro_serving.monitor.service import Monitor, variant_of
from hydro_serving.monitor.storage import SQLiteStore
from hydro_serving.store.profile import profile_csv

from .conftest import exchange, scoring_spec


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0, plans: tuple[str, ...] = ("a", "b")) -> list[dict]:
    return [{"x": float(rng.normal(shift, 1)), "y": float(rng.normal(5, 2)), "plan": str(rng.choice(plans))}
            for _ in range(n)]


def _monitor(tmp_path: Path, profile: dict | None = None) -> Monitor:
    return Monitor(SQLiteStore(tmp_path / "monitor.db"), profile_loader=lambda spec: profile)


def _feed(monitor: Monitor, spec, rows: list[dict], per_request: int = 10, t0: float = 1000.0) -> list:
    events = []
    for i in range(0, len(rows), per_request):
        events += monitor.process([exchange(spec, rows[i:i + per_request], ts=t0)], t0)
    return events


def test_first_window_is_the_baseline_then_only_the_moved_field_drifts(tmp_path: Path) -> None:
    spec = scoring_spec(alert="http://127.0.0.1:9/hook")
    monitor = _monitor(tmp_path)
    rng = np.random.default_rng(7)
    assert _feed(monitor, spec, _rows(rng, 200)) == []
    first = monitor.store.window("scoring", 1)
    assert first["baseline"] and first["fields"] == [] and first["reference"] == "window"
    _feed(monitor, spec, _rows(rng, 200))
    second = monitor.store.window("scoring", 2)
    assert not second["drift"] and second["drifted_fields"] == []
    assert {f["field"] for f in second["fields"]} == {"x", "y", "plan"}
    assert second["corrected_alpha"] == pytest.approx(0.05 / 3)
    assert {f["field"] for f in second["outputs"]} == {"output.label", "output.score"}
    events = _feed(monitor, spec, _rows(rng, 200, shift=2.0, plans=("a", "b", "c")))
    third = monitor.store.window("scoring", 3)
    assert third["drifted_fields"] == ["x", "plan"] and third["drift"] and third["drift_share"] == pytest.approx(2 / 3)
    assert third["output_drift"]
    assert [e[1]["event"] for e in events] == ["drift_started"]
    assert events[0][0] == "http://127.0.0.1:9/hook" and events[0][1]["drifted_fields"] == ["x", "plan"]
    assert _feed(monitor, spec, _rows(rng, 200, shift=2.0, plans=("a", "b", "c"))) == []  # still drifting: no repeat
    back = _feed(monitor, spec, _rows(rng, 200))
    assert [e[1]["event"] for e in back] == ["drift_ended"]
    x = next(f for f in third["fields"] if f["field"] == "x")
    assert x["method"] == "ks" and x["p_value"] < third["corrected_alpha"]
    assert {r["stat"] for r in x["results"]} == {"ks", "wasserstein", "welch_t", "mood_median", "levene", "psi"}
    hist = next(h for h in third["histograms"] if h["field"] == "x")
    assert sum(hist["reference"]) == 200 and sum(hist["production"]) == 200 and len(hist["edges"]) == 11
    text = generate_latest(monitor.metrics.registry).decode()
    assert 'hydro_drift_detected{field="x",function="scoring"} 0.0' in text  # back to normal in the last window
    assert 'hydro_drift_score{field="x",function="scoring",stat="ks"}' in text
    assert 'hydro_drift_p_value{field="plan",function="scoring",stat="chi_square"}' in text


def test_training_profile_is_the_reference_and_rows_are_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    train = tmp_path / "train.csv"
    train.write_text("x,y,plan\n" + "".join(f"{r['x']},{r['y']},{r['plan']}\n" for r in _rows(rng, 3000)))
    monitor = _monitor(tmp_path, profile_csv(train))
    spec = scoring_spec()
    rows = _rows(rng, 200)
    rows[0] = {"x": 99.0, "y": 5.0, "plan": "zzz"}  # outside the training range, an unseen category
    rows[1] = {"x": "oops", "y": 5.0, "plan": "a"}
    _feed(monitor, spec, rows)
    first = monitor.store.window("scoring", 1)
    assert first["reference"] == "profile" and not first["baseline_inputs"] and first["baseline_outputs"]
    assert {f["field"] for f in first["fields"]} == {"x", "y", "plan"} and not first["drift"]
    assert first["unhealthy"] == 2
    bad = monitor.store.rows("scoring", unhealthy_only=True)
    checks = {(f["field"], f["check"]) for r in bad for f in r.failures}
    assert checks == {("x", "out_of_range"), ("plan", "unseen_category"), ("x", "wrong_type")}
    _feed(monitor, spec, _rows(rng, 200, shift=1.5))
    assert monitor.store.window("scoring", 2)["drifted_fields"] == ["x"]


def test_feedback_joins_by_request_id_per_window_and_variant(tmp_path: Path) -> None:
    spec = scoring_spec(rows=20)
    monitor = _monitor(tmp_path)
    rng = np.random.default_rng(1)
    timings = [json.dumps([{"stage": 1, "name": "f", "variant": "f"},
                           {"stage": 2, "name": "a|b", "variant": v}]) for v in ("a", "b")]
    ids = []
    for i in range(20):
        rid = f"order-{i}"
        ids.append(rid)
        monitor.process([exchange(spec, _rows(rng, 1), request_id=rid, timings=timings[i % 2], ts=5.0)], 5.0)
    labels = [(rid, 0, bool(i % 3)) for i, rid in enumerate(ids)] + [("unknown-id", 0, True)]
    assert monitor.add_feedback("scoring", labels) == {"function": "scoring", "accepted": 21, "matched": 20}
    quality = monitor.quality("scoring", [1])[1]
    rows = {r.request_id: r for r in monitor.store.rows("scoring", limit=100)}
    pairs = [(rows[rid].outputs["label"], lab) for rid, _, lab in labels if rid in rows]
    expected = sum(p == t for p, t in pairs) / 20
    assert quality["task"] == "classification" and quality["n"] == 20 and quality["accuracy"] == expected
    assert set(quality["variants"]) == {"a", "b"} and quality["variants"]["a"]["n"] == 10


def test_regression_feedback(tmp_path: Path) -> None:
    from hydro_serving.monitor.feedback import metrics

    result = metrics([(1.0, 1.5), (2.0, 1.0), (3.0, 3.0)])
    assert result["task"] == "regression" and result["mae"] == pytest.approx(0.5)
    assert result["rmse"] == pytest.approx(((0.25 + 1.0) / 3) ** 0.5)
    multi = metrics([("cat", "cat"), ("dog", "cat"), ("dog", "dog"), ("bird", "dog")])
    assert multi["accuracy"] == 0.5 and multi["average"] == "macro"


def test_hostile_bodies_are_counted_not_stored(tmp_path: Path) -> None:
    spec = scoring_spec()
    monitor = _monitor(tmp_path)
    t = tap({})
    from hydro_serving.monitor.sampler import Offered

    for body in (b"\xff\xfe", b"[1, 2", b'"just text"', b"{}", b"[[[[[]]]]]" * 1000):
        monitor.process([Offered(1.0, "scoring", t.request_id, t.trace_id, body, b"", 200, "not json", spec)], 1.0)
    assert monitor.store.count_rows("scoring") == 0
    text = generate_latest(monitor.metrics.registry).decode()
    assert 'hydro_monitor_undecodable_total{function="scoring"} 5.0' in text
    error = exchange(spec, [{"x": 1.0, "y": 2.0, "plan": "a"}], outputs=[], status=400)
    monitor.process([error], 1.0)
    (row,) = monitor.store.rows("scoring")
    assert row.status == 400 and row.failures[-1]["check"] == "error_status" and row.outputs is None
    assert monitor.states["scoring"].inputs == []  # refused requests are not production traffic to compare


def test_variant_of_reads_the_router_timings() -> None:
    assert variant_of('[{"stage":1,"name":"f","variant":"f"},{"stage":2,"name":"a|b","variant":"b"}]') == "b"
    assert variant_of('[{"stage":1,"name":"f","variant":"f"}]') is None
    assert variant_of("garbage") is None and variant_of(None) is None and variant_of('{"a": 1}') is None


@pytest.mark.asyncio
async def test_worker_drains_the_queue_and_posts_one_alert(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    spec = scoring_spec(alert=f"http://127.0.0.1:{port}/hook", rows=100)
    monitor = _monitor(tmp_path)
    await monitor.start()
    try:
        rng = np.random.default_rng(11)
        for shift in (0.0, 0.0, 3.0):  # the third window moves two of three fields: the dataset drifts
            for row in _rows(rng, 100, shift=shift, plans=("a", "b") if shift == 0 else ("c",)):
                assert monitor.offer(tap({}), spec, json.dumps([row]).encode(),
                                     json.dumps([{"label": True, "score": row["x"]}]).encode(), 200)
            for _ in range(200):
                if not monitor.sampler.queue and monitor.states.get("scoring") and \
                        not monitor.states["scoring"].inputs:
                    break
                await asyncio.sleep(0.02)
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.02)
    finally:
        await monitor.stop()
        await runner.cleanup()
    assert [m["event"] for m in received] == ["drift_started"]
    assert received[0]["function"] == "scoring" and received[0]["drifted_fields"] == ["x", "plan"]
    assert "histograms" not in received[0]["summary"] and received[0]["window"] == 3


def test_hostile_values_nesting_and_invented_fields_stay_bounded(tmp_path: Path) -> None:
    from hydro_serving.monitor.reference import MAX_FIELDS
    from hydro_serving.monitor.sampler import Offered

    monitor = _monitor(tmp_path)
    spec = scoring_spec(rows=20)
    t = tap({})
    deep = b"[" * 50_000 + b"]" * 50_000
    monitor.process([Offered(1.0, "scoring", t.request_id, t.trace_id, deep, b"[]", 200, None, spec)], 1.0)
    nan_rows = b'[{"x": NaN, "y": Infinity, "plan": "a"}]'
    monitor.process([Offered(1.0, "scoring", t.request_id, t.trace_id, nan_rows, b'[{"label": true, "score": NaN}]',
                             200, None, spec)], 1.0)
    (row,) = monitor.store.rows("scoring")
    assert np.isnan(row.inputs["x"]) and np.isinf(row.inputs["y"])  # stored as sent, served as null by the API
    from hydro_serving.monitor.api import _dumps

    assert json.loads(_dumps(row.to_dict()))["inputs"] == {"x": None, "y": None, "plan": "a"}
    # a function without a signature: a caller inventing thousands of keys gets at most MAX_FIELDS tested
    free = scoring_spec(rows=20)
    from dataclasses import replace

    free = replace(free, name="free", signature=None)
    wide = [{f"k{i}": float(j + i) for i in range(MAX_FIELDS + 300)} for j in range(20)]
    monitor.process([exchange(free, wide, outputs=[{"y": 1}] * 20)], 2.0)
    monitor.process([exchange(free, wide, outputs=[{"y": 1}] * 20)], 3.0)
    assert len(monitor.store.window("free", 2)["fields"]) == MAX_FIELDS


def test_a_restart_keeps_baselines_and_the_drift_state(tmp_path: Path) -> None:
    spec = scoring_spec(rows=200, alert="http://127.0.0.1:9/hook")
    rng = np.random.default_rng(21)
    first = _monitor(tmp_path)
    _feed(first, spec, _rows(rng, 200))
    events = _feed(first, spec, _rows(rng, 200, shift=2.0, plans=("c",)))
    assert [e[1]["event"] for e in events] == ["drift_started"]
    first.store.close()

    again = _monitor(tmp_path)  # the gateway restarted: same file, new process state
    assert _feed(again, spec, _rows(rng, 200, shift=2.0, plans=("c",))) == []  # still drifting: no second start
    third = again.store.window("scoring", 3)
    assert not third["baseline"] and third["drifted_fields"] == ["x", "plan"]
    assert [e[1]["event"] for e in _feed(again, spec, _rows(rng, 200))] == ["drift_ended"]
    from dataclasses import replace

    redeployed = replace(spec, model="scoring:2")  # a new model: new references, a new baseline window
    _feed(again, redeployed, _rows(rng, 200))
    assert again.store.window("scoring", 5)["baseline"]
