"""Case uds, the gateway hop over TCP vs a unix socket (issue 17 point 3, issue 18 point 2).

Two gateways run side by side in the same run, each with one iris replica (``scale.max: 1``):
one with ``HYDRO_REPLICA_TRANSPORT=tcp`` (the replica on a 127.0.0.1 port, as before), one with
the default (the replica on a unix socket in its run folder). At each concurrency, back to back:

* the TCP gateway's replica called directly with wrk (the baseline: no gateway at all);
* the same function through the TCP gateway;
* the same function through the unix-socket gateway.

The client always reaches the gateway over TCP (wrk has no unix sockets); only the gateway ->
replica leg differs. Ratios are to the direct call at the same concurrency. The gateway's own CPU
per request is its process's user+system time over the measured wrk run divided by the requests.
"""

from __future__ import annotations

from typing import Any

from bench import client, hydro, results, wrk
from bench.cases.hop import body, iris_spec
from bench.context import Context

CONCURRENCY = (1, 8, 32)
DIRECT = "replica called directly (TCP)"
VIA_TCP = "through the gateway, replica over TCP"
VIA_UNIX = "through the gateway, replica over a unix socket"


def _measure(target: str, url: str, payload: bytes, concurrency: int, ctx: Context,
             gateway: hydro.Gateway | None = None) -> dict[str, Any]:
    """bench.load.measure, plus the gateway's CPU seconds over the measured wrk run when ``gateway`` is given."""
    script = wrk.write_script(ctx.scripts, target.replace(" ", "_").replace(",", "").replace("(", "")
                              .replace(")", ""), payload)
    if ctx.settings.warmup_s > 0:
        wrk.run(url, script, concurrency, ctx.settings.warmup_s)
    pid = gateway.server.proc.pid if gateway is not None and gateway.server and gateway.server.proc else None
    before = hydro.process_cpu_seconds(pid) if pid else 0.0
    measured = wrk.run(url, script, concurrency, ctx.settings.duration_s)
    extra: dict[str, Any] = {}
    if pid:
        cpu = hydro.process_cpu_seconds(pid) - before
        extra["gateway_cpu_us_per_request"] = round(cpu / max(1, measured.requests) * 1e6, 1)
        extra["gateway_cpu_share"] = round(cpu / measured.duration_s, 3)  # of one core
    own = client.closed_loop(url, payload, concurrency, ctx.settings.client_s)
    return results.point(target, concurrency, measured, own, **extra)


def run(ctx: Context) -> dict[str, Any]:
    payload = body()
    points: list[dict[str, Any]] = []
    with hydro.Gateway(ctx.folder("uds-tcp"), env={"HYDRO_REPLICA_TRANSPORT": "tcp"}) as tcp_gw, \
            hydro.Gateway(ctx.folder("uds-unix")) as unix_gw:
        for gw in (tcp_gw, unix_gw):
            gw.deploy(iris_spec())
            gw.warm("iris", payload)
        direct = next(r for r in tcp_gw.replicas("iris") if r.get("endpoint"))
        over_socket = next(r for r in unix_gw.replicas("iris") if r.get("endpoint"))
        if "socket" in direct or "socket" not in over_socket:
            raise RuntimeError(f"unexpected replica transports: tcp={direct}, unix={over_socket}")
        for c in CONCURRENCY:  # back to back at each concurrency: drift between rows stays small
            points.append(_measure(DIRECT, direct["endpoint"] + "/", payload, c, ctx))
            points.append(_measure(VIA_TCP, tcp_gw.function_url("iris"), payload, c, ctx, tcp_gw))
            points.append(_measure(VIA_UNIX, unix_gw.function_url("iris"), payload, c, ctx, unix_gw))
    results.add_ratios(points, DIRECT)
    hop = {}
    for target in (VIA_TCP, VIA_UNIX):
        via = next(p for p in points if p["target"] == target and p["concurrency"] == 1)
        base = next(p for p in points if p["target"] == DIRECT and p["concurrency"] == 1)
        hop[target] = {"wrk_p50_ms": round(via["p50_ms"] - base["p50_ms"], 3),
                       "client_p50_ms": round(via["client"]["p50_ms"] - base["client"]["p50_ms"], 3)
                       if via.get("client") and base.get("client") else None}
    return {
        "status": "ok", "title": "gateway hop, replica over TCP vs a unix socket (iris, one row per request)",
        "baseline": DIRECT, "points": points, "hop_p50_ms": hop,
        "notes": ["two gateways in the same run, each with one iris replica (scale max 1, concurrency 64, the "
                  "runtime's default workers); the client reaches both gateways over TCP",
                  "the direct row calls the TCP gateway's replica itself: the hop is the difference, measured "
                  "back to back at each concurrency",
                  "gateway_cpu_us_per_request: the gateway process's user+system CPU over the measured wrk run "
                  "divided by its requests"],
    }
