"""Case 3, cold start: a request to the demo's sklearn classifier at zero replicas, until its response.

Each sample scales ``pm-classifier`` to zero through the admin API, waits until no replica is
left, then times one POST through the gateway (the response must say ``X-Cold-Start: true``).
The split comes from what the product exposes: the gateway's ``hydro_gateway_cold_start_seconds``
phases (``process_start``: spawn until /_/health answers; ``model_load``: health until ready) and
the runtime's ``hydro_function_model_load_seconds`` (the template's import plus the model load,
measured inside the replica). The remainder is the gateway's own share (probing, proxying).

The floor is a fresh ``python -c "import sklearn, joblib; joblib.load(...); predict_proba"`` timed
from spawn to exit, with its own import/load/predict split measured inside the process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench import hydro
from bench.context import Context
from bench.models import demo_models
from bench.stats import percentile, ratio

FUNCTION = "pm-classifier"
FLOOR_CODE = """
import json, sys, time
t0 = time.perf_counter()
import joblib, sklearn
import numpy as np
t1 = time.perf_counter()
model = joblib.load(sys.argv[1])
t2 = time.perf_counter()
model.predict_proba(np.asarray(json.loads(sys.argv[2]), dtype=np.float64))
t3 = time.perf_counter()
print(json.dumps({"imports_ms": (t1 - t0) * 1e3, "model_load_ms": (t2 - t1) * 1e3, "predict_ms": (t3 - t2) * 1e3}))
"""


def classifier_body() -> tuple[bytes, list[list[float]]]:
    """Feature records of the seed request (what the pipeline's first stage hands the classifier)."""
    from bench.cases.pipeline import SEED_REQUEST
    from hydro_serving.demo.paths import load_features

    features = load_features()
    names = [f["name"] for f in json.loads((demo_models() / "signature.json").read_text())["inputs"]]
    records = [features.pair_features(p["Title1"], p.get("ItemSpecifics1"), p["Title2"], p.get("ItemSpecifics2"))
               for p in json.loads(SEED_REQUEST.read_bytes())]
    return json.dumps(records).encode(), [[r[n] for n in names] for r in records]


def floor_sample(rows: list[list[float]]) -> dict[str, float]:
    """One fresh interpreter that imports sklearn, loads the model and predicts: wall time from spawn to exit."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", FLOOR_CODE, str(demo_models() / "model.joblib"), json.dumps(rows)],
                          capture_output=True, text=True, timeout=120, check=True)
    wall = (time.perf_counter() - started) * 1000.0
    return {"total_ms": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def _phase_sums(gw: hydro.Gateway) -> dict[str, float]:
    text = gw.metrics_text()
    return {phase: hydro.metric_value(text, "hydro_gateway_cold_start_seconds_sum", function=FUNCTION, phase=phase)
            for phase in ("process_start", "model_load")}


def cold_sample(gw: hydro.Gateway, body: bytes) -> dict[str, Any]:
    gw.scale(FUNCTION, 0)
    gw.wait_replicas(FUNCTION, 0)
    before = _phase_sums(gw)
    started = time.perf_counter()
    status, headers, raw = gw.invoke(FUNCTION, body)
    total = (time.perf_counter() - started) * 1000.0
    if status != 200:
        raise RuntimeError(f"cold call answered {status}: {raw[:300]!r}")
    after = _phase_sums(gw)
    sample: dict[str, Any] = {
        "total_ms": total,
        "cold": headers.get("X-Cold-Start") == "true",
        "process_start_ms": (after["process_start"] - before["process_start"]) * 1000.0,
        "ready_after_health_ms": (after["model_load"] - before["model_load"]) * 1000.0,
    }
    replicas = [r for r in gw.replicas(FUNCTION) if r.get("endpoint")]
    if replicas:
        text = hydro.replica_get(replicas[0], "/metrics")[1].decode()  # over its unix socket by default
        load = hydro.metric_value(text, "hydro_function_model_load_seconds", function=FUNCTION)
        sample["runtime_import_and_load_ms"] = load * 1000.0
    sample["gateway_share_ms"] = total - sample["process_start_ms"] - sample["ready_after_health_ms"]
    return sample


def _summary(samples: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for key in keys:
        values = [s[key] for s in samples if s.get(key) is not None]
        if values:
            out[key] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "min": min(values),
                        "max": max(values)}
    return out


def _cold_runs(ctx: Context, body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Cold samples of the default gateway and of one with HYDRO_LOAD_BEFORE_FORK=0, alternated.

    Both gateways are up the whole time and take turns, so the load on a shared machine drifts over
    both series alike (a first series then a second one mostly measured the drift).
    """
    from bench.cases.pipeline import pipeline_specs

    spec = next(s for s in pipeline_specs() if s["name"] == FUNCTION)
    spec["scale"] = {"min": 0, "max": 1, "idle": 600, "concurrency": 8}
    with hydro.Gateway(ctx.folder("coldstart-gateway")) as gw, \
            hydro.Gateway(ctx.folder("coldstart-gateway-per-worker"), env={"HYDRO_LOAD_BEFORE_FORK": "0"}) as ab:
        for g in (gw, ab):
            g.deploy(spec)
            g.warm(FUNCTION, body)  # the first start also fills caches a later cold start would find warm
        samples: list[dict[str, Any]] = []
        per_worker: list[dict[str, Any]] = []
        for i in range(ctx.settings.cold_starts):
            order = ((gw, samples), (ab, per_worker)) if i % 2 == 0 else ((ab, per_worker), (gw, samples))
            for g, out in order:
                out.append(cold_sample(g, body))
        return samples, per_worker


COLD_KEYS = ["total_ms", "process_start_ms", "ready_after_health_ms", "runtime_import_and_load_ms", "gateway_share_ms"]


def run(ctx: Context) -> dict[str, Any]:
    body, rows = classifier_body()
    floor = [floor_sample(rows) for _ in range(ctx.settings.floor_runs)]
    # with the A/B of issue 18's change, interleaved: each worker loads the model after the fork (as before)
    samples, per_worker = _cold_runs(ctx, body)
    fs = _summary(floor, ["total_ms", "imports_ms", "model_load_ms", "predict_ms"])
    cs = _summary(samples, COLD_KEYS)
    ws = _summary(per_worker, COLD_KEYS)
    rows_out = [f"{'measure':<44} {'p50 ms':>10} {'p95 ms':>10} {'x floor p50':>12}"]
    floor_p50 = fs["total_ms"]["p50"]
    for label, key, src in (("floor: fresh python, total", "total_ms", fs),
                            ("  floor: imports", "imports_ms", fs), ("  floor: model load", "model_load_ms", fs),
                            ("cold start through gateway, total", "total_ms", cs),
                            ("  process start (spawn->health)", "process_start_ms", cs),
                            ("  health->ready (imports+load)", "ready_after_health_ms", cs),
                            ("  runtime: template import+load", "runtime_import_and_load_ms", cs),
                            ("  gateway share (rest)", "gateway_share_ms", cs),
                            ("A/B: each worker loads (LOAD_BEFORE_FORK=0)", "total_ms", ws),
                            ("  process start (spawn->health)", "process_start_ms", ws),
                            ("  health->ready (imports+load)", "ready_after_health_ms", ws),
                            ("  gateway share (rest)", "gateway_share_ms", ws)):
        if key in src:
            r = ratio(src[key]["p50"], floor_p50)
            rows_out.append(f"{label:<44} {src[key]['p50']:>10.1f} {src[key]['p95']:>10.1f} "
                            f"{(f'{r:.2f}x') if r is not None else '-':>12}")
    return {
        "status": "ok", "title": f"cold start of {FUNCTION} (sklearn random forest) from zero replicas",
        "baseline": "fresh python -c 'import sklearn, joblib; joblib.load(); predict_proba' (the floor)",
        "points": [], "rows": rows_out, "floor": {"samples": floor, "summary": fs},
        "cold": {"samples": samples, "summary": cs},
        "cold_per_worker_load": {"samples": per_worker, "summary": ws},
        "ratio": {"p50": ratio(cs["total_ms"]["p50"], floor_p50),
                  "p95": ratio(cs["total_ms"]["p95"], fs["total_ms"]["p95"]),
                  "vs_per_worker_load_p50": ratio(cs["total_ms"]["p50"], ws["total_ms"]["p50"])},
        "notes": [f"{sum(1 for s in samples if s['cold'])}/{len(samples)} samples answered X-Cold-Start: true",
                  "the A/B rows start the same function with HYDRO_LOAD_BEFORE_FORK=0 on a second gateway (each of "
                  "the two workers loads the model after the fork, the behaviour before issue 18); both gateways "
                  "are up the whole time and their cold starts alternate"],
    }
