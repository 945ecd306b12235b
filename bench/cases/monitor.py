"""Case 6, monitoring overhead: what payload sampling at ``sample: 1.0`` adds to the invocation path.

(a) In process, the gateway's added work per request: ``tap`` (request id, trace), the telemetry
switch, and ``offer``
(the sampling decision and a deque append), at sample 0 (monitoring declared, nothing sampled),
1.0, and with the opt-out header; timed in batches of 100 calls (``perf_counter_ns``) so the
timer's own cost is amortised; the queue is drained between batches as the worker would.
(b) End to end: the demo pipeline (pm-features -> pm-classifier behind a router, the pipeline case's
specs) deployed once with ``monitoring: {sample: 1.0}`` on all three functions, measured at one client
with every request sampled vs. every request opted out (``X-Hydro-Monitor: off``): the same replicas
on both sides (two deployed copies of a pipeline differ by several ms on their own), and the sampled
side includes the worker's decoding, checks, SQLite writes and windows competing for the same CPU.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import hydro, results
from bench.cases.pipeline import SEED_REQUEST, pipeline_specs
from bench.context import Context

BASELINE = "demo pipeline, sampling opted out (X-Hydro-Monitor: off)"
MONITORED = "demo pipeline, every request sampled (sample 1.0)"
ROUNDS = 2  # alternate the two deployments to cancel slow drifts of a shared machine


def hot_path(batches: int = 2000, per_batch: int = 100) -> dict[str, Any]:
    """Per-request cost (microseconds) of the gateway's monitor calls, by sampling setting."""
    from hydro_serving import telemetry
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
                telemetry.enabled()  # the gateway also asks whether spans are exported (off here)
                sampler.offer(t, spec, body, answer, 200, None)
            per_call.append((time.perf_counter_ns() - started) / per_batch / 1000.0)
            sampler.queue.clear()
        per_call.sort()
        out[label] = {"p50_us": round(statistics.median(per_call), 3),
                      "p99_us": round(per_call[int(len(per_call) * 0.99)], 3), "calls": batches * per_batch}
    return out


def worker_cost(exchanges: int = 2000) -> dict[str, Any]:
    """CPU the worker spends per sampled exchange (decode, checks, SQLite, windows of 400): off the request
    path, but on the gateway's CPU, so the upper bound of what sampling takes from a busy gateway."""
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from hydro_serving.monitor.sampler import Offered, tap
    from hydro_serving.monitor.service import Monitor
    from hydro_serving.monitor.storage import SQLiteStore
    from hydro_serving.stack import load_stack
    from hydro_serving.stack.model import Monitoring

    spec = load_stack(SEED_REQUEST.parents[2] / "stack.yml").function("product-matching")
    spec = replace(spec, monitoring=Monitoring(sample=1.0, window_rows=400))
    body = SEED_REQUEST.read_bytes()
    answer = b'[{"match":false,"probability":0.0},{"match":true,"probability":1.0}]'
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        monitor = Monitor(SQLiteStore(Path(tmp) / "m.db"), profile_loader=lambda s: None)
        items = []
        for _ in range(exchanges):
            t = tap({})
            items.append(Offered(time.time(), spec.name, t.request_id, t.trace_id, body, answer, 200, None, spec))
        started = time.process_time()
        for i in range(0, exchanges, 20):  # the worker's batches under light load
            monitor.process(items[i:i + 20], time.time())
        cpu = time.process_time() - started
        windows = monitor.store.last_seq(spec.name)
        monitor.store.close()
    return {"us_per_exchange": round(cpu / exchanges * 1e6, 1), "exchanges": exchanges, "rows": exchanges * 2,
            "windows_closed": windows}


def loop_lag(seconds: float = 4.0, rate: float = 200.0) -> dict[str, Any]:
    """How late the gateway's event loop wakes up (p50/p99 ms) with the worker idle vs. busy with the demo
    pipeline's three sampled exchanges per request at ``rate`` requests/s: the worker thread's share of the
    GIL is what sampling could take from the request path."""
    import asyncio
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from hydro_serving.monitor.sampler import tap
    from hydro_serving.monitor.service import Monitor
    from hydro_serving.monitor.storage import SQLiteStore
    from hydro_serving.stack import load_stack
    from hydro_serving.stack.model import Monitoring

    spec = load_stack(SEED_REQUEST.parents[2] / "stack.yml").function("product-matching")
    spec = replace(spec, monitoring=Monitoring(sample=1.0, window_rows=400))
    body = SEED_REQUEST.read_bytes()
    answer = b'[{"match":false,"probability":0.0},{"match":true,"probability":1.0}]'

    async def measure_lag(sampling: bool) -> list[float]:
        with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
            monitor = Monitor(SQLiteStore(Path(tmp) / "m.db"), profile_loader=lambda s: None)
            await monitor.start()
            lags: list[float] = []
            end = time.perf_counter() + seconds
            due = time.perf_counter()
            while time.perf_counter() < end:
                if sampling:
                    for _ in range(3):
                        monitor.offer(tap({}), spec, body, answer, 200)
                due += 1.0 / rate
                want = max(0.0, due - time.perf_counter())
                started = time.perf_counter()
                await asyncio.sleep(want)
                lags.append((time.perf_counter() - started - want) * 1000)
            await monitor.stop()
        return sorted(lags)

    out: dict[str, Any] = {"rate": rate}
    for label, sampling in (("idle", False), ("sampling", True), ("idle again", False), ("sampling again", True)):
        lags = asyncio.run(measure_lag(sampling))
        out[label] = {"p50_ms": round(statistics.median(lags), 3), "p99_ms": round(lags[int(len(lags) * 0.99)], 3)}
    return out


def interleaved(url: str, body: bytes, pairs: int) -> dict[str, float]:
    """p50 (ms) of requests alternating between opted out and sampled, one at a time: drift of a shared machine
    hits both sides equally."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    seen: dict[str, list[float]] = {"opted_out": [], "sampled": []}
    for i in range(pairs):
        order = ("opted_out", "sampled") if i % 2 else ("sampled", "opted_out")
        for side in order:
            headers = {"Content-Type": "application/json", **({"X-Hydro-Monitor": "off"} if side == "opted_out"
                                                             else {})}
            started = time.perf_counter()
            with opener.open(urllib.request.Request(url, data=body, headers=headers, method="POST"), timeout=60) as r:
                r.read()
            seen[side].append((time.perf_counter() - started) * 1000)
    out = {f"{k}_p50_ms": round(statistics.median(v), 3) for k, v in seen.items()}
    out["added_p50_ms"] = round(out["sampled_p50_ms"] - out["opted_out_p50_ms"], 3)
    out["pairs"] = pairs
    return out


def run(ctx: Context) -> dict[str, Any]:
    from bench import wrk

    body = SEED_REQUEST.read_bytes()
    micro = hot_path(500 if ctx.quick else 2000)
    worker = worker_cost(1000 if ctx.quick else 4000)
    lag = loop_lag(2.0 if ctx.quick else 8.0)
    points: list[dict[str, Any]] = []
    specs = [{**spec, "monitoring": {"sample": 1.0, "window": {"rows": 400}}} for spec in pipeline_specs()]
    opt_out = wrk.write_script(ctx.scripts, "monitor_opted_out", body, headers={"X-Hydro-Monitor": "off"})
    sampled = wrk.write_script(ctx.scripts, "monitor_sampled", body)
    with hydro.Gateway(ctx.folder("monitor-gateway")) as gw:
        for spec in specs:
            gw.deploy(spec)
        gw.warm("pm-pipeline", body)
        url = gw.function_url("pm-pipeline")
        for _ in range(ROUNDS):  # the same replicas on both sides: only the sampling differs
            for target, script in ((BASELINE, opt_out), (MONITORED, sampled)):
                if ctx.settings.warmup_s > 0:
                    wrk.run(url, script, 1, ctx.settings.warmup_s)
                points.append(results.point(target, 1, wrk.run(url, script, 1, ctx.settings.duration_s)))
        alternating = interleaved(url, body, 100 if ctx.quick else 400)
        metrics = gw.metrics_text()
        dropped = sum(hydro.metric_value(metrics, "hydro_monitor_samples_dropped_total", function=s["name"])
                      for s in specs)
        rows = sum(hydro.metric_value(metrics, "hydro_monitor_rows_total", function=s["name"]) for s in specs)
    results.add_ratios(points, BASELINE)
    base = statistics.median(p["p50_ms"] for p in points if p["target"] == BASELINE)
    mon = statistics.median(p["p50_ms"] for p in points if p["target"] == MONITORED)
    return {
        "status": "ok", "title": "monitoring overhead (demo pipeline, 2 pairs per request, c=1)",
        "baseline": BASELINE, "points": points, "hot_path_us": micro, "worker_cpu": worker,
        "event_loop_lag": lag, "interleaved": alternating,
        "added_p50_ms": round(mon - base, 3), "rows_sampled": rows, "samples_dropped": dropped,
        "notes": ["hot_path_us: the gateway's tap+offer per request, in process (the invocation path's own cost)",
                  "worker_cpu: CPU of the monitor's worker per sampled exchange (the demo request, 2 rows), in process",
                  "event_loop_lag: how late an event loop wakes up with the worker idle vs sampling 3 exchanges "
                  "per request at 200 req/s (the worker thread's GIL share, in process)",
                  "one deployment with monitoring.sample 1.0 on all three functions; the baseline sends "
                  "X-Hydro-Monitor: off (nothing sampled, the tap still runs), so both sides use the same replicas",
                  f"added_p50_ms: median wrk p50 sampled minus opted out over {ROUNDS} alternating rounds; "
                  "interleaved: the same from requests alternating one by one"],
    }
