"""Case 6, monitoring overhead: what payload sampling at ``sample: 1.0`` adds to the invocation path.

(a) In process, the gateway's added work per request: ``tap`` (request id, trace) plus ``offer``
(the sampling decision and a deque append), at sample 0 (monitoring declared, nothing sampled),
1.0, and with the opt-out header; timed in batches of 100 calls (``perf_counter_ns``) so the
timer's own cost is amortised; the queue is drained between batches as the worker would.
(b) End to end: the demo pipeline (pm-features -> pm-classifier behind a router, the pipeline case's
specs) deployed twice on one gateway, once without ``monitoring`` (the baseline) and once with
``monitoring: {sample: 1.0}`` on all three functions, measured back to back at one client. The
monitored run includes the worker's decoding, checks, SQLite writes and windows competing for the
same CPU, so its difference to the baseline is the whole cost of monitoring, not just the hot path.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import hydro, results
from bench.cases.pipeline import SEED_REQUEST, pipeline_specs
from bench.context import Context
from bench.load import measure

BASELINE = "demo pipeline, no monitoring"
MONITORED = "demo pipeline, monitoring sample 1.0"
ROUNDS = 2  # alternate the two deployments to cancel slow drifts of a shared machine


def hot_path(batches: int = 2000, per_batch: int = 100) -> dict[str, Any]:
    """Per-request cost (microseconds) of the gateway's monitor calls, by sampling setting."""
    from hydro_serving.monitor.sampler import Sampler, tap
    from hydro_serving.stack import FunctionSpec

    body = SEED_REQUEST.read_bytes()
    answer = b'[{"match":false,"probability":0.0},{"match":true,"probability":1.0}]'
    headers = {"Content-Type": "application/json", "Host": "127.0.0.1:8080", "User-Agent": "bench"}
    out: dict[str, Any] = {}
    for label, monitoring, extra in (("sample 0", {"sample": 0.0}, {}), ("sample 1.0", {"sample": 1.0}, {}),
                                     ("sample 1.0, opt-out header", {"sample": 1.0}, {"X-Hydro-Monitor": "off"})):
        spec = FunctionSpec.from_dict({"name": "pm", "lang": "python3", "handler": "./x", "monitoring": monitoring})
        sampler = Sampler(10_000)
        hdrs = {**headers, **extra}
        per_call = []
        for _ in range(batches):
            started = time.perf_counter_ns()
            for _ in range(per_batch):
                t = tap(hdrs)
                sampler.offer(t, spec, body, answer, 200, None)
            per_call.append((time.perf_counter_ns() - started) / per_batch / 1000.0)
            sampler.queue.clear()
        per_call.sort()
        out[label] = {"p50_us": round(statistics.median(per_call), 3),
                      "p99_us": round(per_call[int(len(per_call) * 0.99)], 3), "calls": batches * per_batch}
    return out


def run(ctx: Context) -> dict[str, Any]:
    body = SEED_REQUEST.read_bytes()
    micro = hot_path(500 if ctx.quick else 2000)
    points: list[dict[str, Any]] = []
    plain = pipeline_specs()
    names = {s["name"]: s["name"] + "-mon" for s in plain}
    monitored = []
    for spec in plain:
        copy = {**spec, "name": names[spec["name"]], "monitoring": {"sample": 1.0, "window": {"rows": 400}}}
        if copy.get("chain"):
            copy["chain"] = [{"variants": {names[f]: w for f, w in stage["variants"].items()}}
                             for stage in copy["chain"]]
        monitored.append(copy)
    with hydro.Gateway(ctx.folder("monitor-gateway")) as gw:
        for spec in [*plain, *monitored]:
            gw.deploy(spec)
        gw.warm("pm-pipeline", body)
        gw.warm("pm-pipeline-mon", body)
        for _ in range(ROUNDS):
            points.append(measure(BASELINE, gw.function_url("pm-pipeline"), body, 1, ctx.settings, ctx.scripts))
            points.append(measure(MONITORED, gw.function_url("pm-pipeline-mon"), body, 1, ctx.settings,
                                  ctx.scripts))
        metrics = gw.metrics_text()
        dropped = sum(hydro.metric_value(metrics, "hydro_monitor_samples_dropped_total", function=n)
                      for n in names.values())
        rows = sum(hydro.metric_value(metrics, "hydro_monitor_rows_total", function=n) for n in names.values())
    results.add_ratios(points, BASELINE)
    base = statistics.median(p["p50_ms"] for p in points if p["target"] == BASELINE)
    mon = statistics.median(p["p50_ms"] for p in points if p["target"] == MONITORED)
    return {
        "status": "ok", "title": "monitoring overhead (demo pipeline, 2 pairs per request, c=1)",
        "baseline": BASELINE, "points": points, "hot_path_us": micro,
        "added_p50_ms": round(mon - base, 3), "rows_sampled": rows, "samples_dropped": dropped,
        "notes": ["hot_path_us: the gateway's tap+offer per request, in process (the invocation path's own cost)",
                  "added_p50_ms: median p50 of the monitored pipeline minus the unmonitored one, "
                  f"{ROUNDS} alternating rounds; three sampled exchanges per request (router and both stages)"],
    }
