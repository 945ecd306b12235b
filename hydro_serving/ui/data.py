"""What each screen shows, as plain dicts built from the gateway's domain objects.

Why apart from the views: the same rows feed the first page render and the SSE updates, so a
live page and a reloaded page never disagree. Nothing here writes; actions live in :mod:`.views`.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

import hydro_serving.ui.svg as svg
from hydro_serving.gateway.core import Gateway
from hydro_serving.store.trust import PIN_ANNOTATION
from hydro_serving.ui.stats import Recorder

SORT_KEYS = ("name", "template", "model", "replicas", "invocations", "p50", "p95", "errors", "cold", "drift")
NONE = "\u2013"  # an en dash: no value yet
BREAKER_NAMES = {0: "closed", 1: "half-open", 2: "open"}


def _model(spec: Any) -> str:
    """``name:version@sha`` as the deploy pinned it (alias resolved), else the reference as written."""
    pin = spec.annotations.get(PIN_ANNOTATION)
    if pin:
        name, _, digest = pin.partition("@")
        return f"{name}@{digest.removeprefix('sha256:')[:12]}" if digest else name
    return spec.model or ""


def drifting(gw: Gateway, name: str) -> bool | None:
    """True/False for a monitored function (its current drift state), None when it is not monitored."""
    pool = gw.pools.get(name)
    if pool is None or pool.spec.monitoring is None:
        return None
    state = gw.monitor.states.get(name)
    return bool(state.drifting) if state is not None else False


def function_row(gw: Gateway, recorder: Recorder, name: str) -> dict[str, Any]:
    pool = gw.pools[name]
    status = pool.status()
    win = recorder.window(name)
    return {
        "name": name, "template": pool.spec.lang or ("image" if pool.spec.image else ""),
        "model": _model(pool.spec), "ready": status["availableReplicas"], "total": status["replicas"],
        "at_zero": status["replicas"] == 0, "invocations": pool.invocations, "queued": status["queued"],
        "p50": win["p50_ms"], "p95": win["p95_ms"], "errors": win["error_rate"], "rps": win["rps"],
        "cold": win["cold_starts"], "drift": drifting(gw, name), "router": pool.spec.is_router,
    }


def function_rows(gw: Gateway, recorder: Recorder, query: str = "", sort: str = "name",
                  descending: bool = False) -> list[dict[str, Any]]:
    """Every function's row, filtered by ``query`` (in name, template or model) and sorted by ``sort``."""
    q = query.strip().lower()
    rows = [function_row(gw, recorder, name) for name in sorted(gw.pools)]
    if q:
        rows = [r for r in rows if q in r["name"] or q in r["template"].lower() or q in r["model"].lower()]
    key = sort if sort in SORT_KEYS else "name"
    field = {"replicas": "ready"}.get(key, key)

    def sort_key(row: dict[str, Any]) -> tuple[int, Any]:
        value = row[field]
        return (value is None, value if value is not None else 0)

    rows.sort(key=sort_key, reverse=descending)
    return rows


def fmt_ms(value: float | None) -> str:
    return NONE if value is None else (f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms")


def fmt_rate(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def live_row(row: dict[str, Any]) -> dict[str, str]:
    """A row as the page shows its cells (what the SSE stream sends, and the template prints)."""
    return {
        "name": row["name"], "template": row["template"], "model": row["model"] or NONE,
        "replicas": f"{row['ready']}/{row['total']}" + (" (at zero)" if row["at_zero"] else ""),
        "invocations": str(row["invocations"]), "p50": fmt_ms(row["p50"]), "p95": fmt_ms(row["p95"]),
        "errors": fmt_rate(row["errors"]), "cold": str(row["cold"]),
        "drift": {None: "not monitored", True: "drifting", False: "ok"}[row["drift"]],
        "state": "at-zero" if row["at_zero"] else ("ready" if row["ready"] else "starting"),
    }


def signature_of(gw: Gateway, name: str) -> Any:
    """The signature a try-it form is built from: the function's, or a router's first stage's."""
    spec = gw.pools[name].spec
    if spec.signature is not None:
        return spec.signature
    if spec.is_router and spec.chain:
        first = spec.chain[0].functions[0]
        pool = gw.pools.get(first)
        if pool is not None:
            return pool.spec.signature
    return None


def function_detail(gw: Gateway, recorder: Recorder, name: str) -> dict[str, Any]:
    pool = gw.pools[name]
    now = time.monotonic()
    replicas = []
    for r in pool.replicas:
        since = r.ready_at or r.started_at
        replicas.append({"id": r.id, "pid": r.pid, "container": r.info.get("container") or r.info.get("id"),
                         "state": r.state, "generation": r.generation, "inflight": r.inflight,
                         "uptime": f"{now - since:.0f} s" if since else NONE,
                         "endpoint": f"unix:{r.socket}" if r.socket else r.endpoint})
    series = recorder.series(name)
    cold = recorder.cold(name)
    return {
        "row": function_row(gw, recorder, name), "replicas": replicas,
        "cold": {"process_start": cold.process_start, "model_load": cold.model_load, "at": cold.at},
        "spark_rps": svg.sparkline(series["rps"], f"{name} throughput, requests per second"),
        "spark_latency": svg.sparkline(series["latency_ms"], f"{name} mean latency, ms"),
    }


def cold_text(cold: dict[str, Any]) -> str:
    if cold.get("process_start") is None:
        return "no cold start seen since the gateway started"
    load = cold.get("model_load")
    return (f"process start {cold['process_start'] * 1000:.0f} ms + model load "
            + (f"{load * 1000:.0f} ms" if load is not None else "(in progress)"))


# ---- pipelines ----------------------------------------------------------------------------------


def _stage_counts(gw: Gateway, pipeline: str) -> dict[str, dict[str, float]]:
    """Per function called by ``pipeline``: calls, seconds, errors (shadows apart), from the gateway's series."""
    out: dict[str, dict[str, float]] = {}
    m = gw.metrics
    for metric, kind in ((m.stage_duration, "calls"), (m.shadow_duration, "shadow_calls")):
        for family in metric.collect():
            for s in family.samples:
                if s.labels.get("pipeline") != pipeline:
                    continue
                slot = out.setdefault(s.labels["function"], {})
                if s.name.endswith("_count"):
                    slot[kind] = slot.get(kind, 0) + s.value
                elif s.name.endswith("_sum"):
                    slot[kind + "_seconds"] = slot.get(kind + "_seconds", 0) + s.value
    for metric, kind in ((m.stage_errors, "errors"), (m.shadow_errors, "shadow_errors")):
        for family in metric.collect():
            for s in family.samples:
                if s.labels.get("pipeline") == pipeline and s.name.endswith("_total"):
                    slot = out.setdefault(s.labels["function"], {})
                    slot[kind] = slot.get(kind, 0) + s.value
    return out


async def breaker_states(gw: Gateway, name: str) -> dict[str, str]:
    """Breaker state per stage function, read from the router replicas' own ``/metrics`` (best effort)."""
    pool = gw.pools[name]
    states: dict[str, str] = {}
    if gw.session is None:
        return states
    for replica in [r for r in pool.replicas if r.state == "ready"][:3]:
        session = replica.session or gw.session  # a replica on a unix socket: its own pool (gateway/upstream.py)
        if replica.socket and session is gw.session:  # stopping
            continue
        try:
            async with session.get(replica.endpoint + "/metrics", timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                text = await resp.text()
        except (OSError, TimeoutError, aiohttp.ClientError):  # a router may be mid-restart
            continue
        for family in text_string_to_metric_families(text):
            if family.name != "hydro_router_breaker_state":
                continue
            for s in family.samples:
                fn = s.labels.get("function", "")
                value = BREAKER_NAMES.get(int(s.value), "unknown")
                if states.get(fn) != "open":  # the worst state any replica reports
                    states[fn] = value
    return states


async def pipelines(gw: Gateway) -> list[dict[str, Any]]:
    out = []
    for name in sorted(gw.pools):
        spec = gw.pools[name].spec
        if not spec.is_router:
            continue
        counts = _stage_counts(gw, name)
        breakers = await breaker_states(gw, name)
        stages = []
        for index, stage in enumerate(spec.chain):
            calls = sum(counts.get(fn, {}).get("calls", 0) for fn in stage.functions)
            variants = []
            for fn, weight in stage.variants:
                c = counts.get(fn, {})
                n = c.get("calls", 0)
                variants.append({
                    "function": fn, "weight": weight, "calls": int(n),
                    "observed": (n / calls) if calls else None,
                    "mean_ms": c.get("calls_seconds", 0) / n * 1000 if n else None,
                    "errors": int(c.get("errors", 0)), "breaker": breakers.get(fn, "closed" if breakers else NONE),
                })
            shadows = []
            for fn in stage.shadow:
                c = counts.get(fn, {})
                n = c.get("shadow_calls", 0)
                shadows.append({"function": fn, "calls": int(n), "errors": int(c.get("shadow_errors", 0)),
                                "mean_ms": c.get("shadow_calls_seconds", 0) / n * 1000 if n else None})
            stages.append({"index": index + 1, "variants": variants, "shadow": list(stage.shadow),
                           "shadows": shadows, "experiment": stage.is_experiment})
        out.append({"name": name, "stages": stages, "graph": svg.pipeline_graph(name, stages)})
    return out


# ---- monitoring -----------------------------------------------------------------------------------


async def monitoring_list(gw: Gateway) -> list[dict[str, Any]]:
    out = []
    for name in sorted(gw.pools):
        spec = gw.pools[name].spec
        if spec.monitoring is None:
            continue
        last = await gw.monitor.call(gw.monitor.store.windows, name, 1)
        w = last[-1] if last else None
        out.append({"name": name, "windows": w["seq"] if w else 0, "drift": drifting(gw, name),
                    "drifted_fields": (w or {}).get("drifted_fields") or [],
                    "drift_share": (w or {}).get("drift_share")})
    return out


async def monitoring_detail(gw: Gateway, name: str, window: int | None) -> dict[str, Any]:
    overview = await gw.monitor.call(gw.monitor.overview, name, 50, window, 20)
    chosen = overview.get("window") or {}
    windows = overview.get("windows") or []
    variants: dict[str, dict[str, Any]] = {}
    for w in windows:
        quality = w.get("quality") or {}
        for variant, metrics in (quality.get("variants") or {}).items():
            variants[variant] = {**metrics, "window": w["seq"]}
        if quality and not quality.get("variants"):
            variants["(all)"] = {**{k: v for k, v in quality.items() if k != "variants"}, "window": w["seq"]}
    return {
        "name": name, "overview": overview, "window": chosen, "windows": windows,
        "fields": chosen.get("fields") or [],
        "histograms": [{"field": h.get("field"), "svg": svg.histogram_pair(h)} for h in chosen.get("histograms") or []],
        "share_svg": svg.bars([w.get("drift_share") or 0.0 for w in windows], f"{name}: drifted share per window",
                              top=1.0),
        "unhealthy": overview.get("unhealthy") or [], "quality": variants,
    }
