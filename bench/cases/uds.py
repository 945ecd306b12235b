"""Case uds, the gateway hop over TCP vs a unix socket (issue 17 point 3, issue 18 point 2).

Two gateways run side by side in the same run, each with one iris replica (``scale.max: 1``):
one with ``HYDRO_REPLICA_TRANSPORT=tcp`` (the replica on a 127.0.0.1 port, as before), one with
the default (the replica on a unix socket in its run folder). At each concurrency, back to back:

* the TCP gateway's replica called directly with wrk (the baseline: no gateway at all);
* the same function through the TCP gateway;
* the same function through the unix-socket gateway.

The client always reaches the gateway over TCP (wrk has no unix sockets); only the gateway ->
replica leg differs. Ratios are to the direct call at the same concurrency. Every point records the
CPU per request of the gateway, the replica's process tree and wrk over the measured run, and the
machine's idle fraction (bench.cpu); ``--profile`` adds flame graphs of the unix-socket gateway and
its replica at c=8 (bench.flame).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import cpu, flame, hydro, results, settle
from bench.cases.hop import body, iris_spec
from bench.context import Context
from bench.load import measure

CONCURRENCY = (1, 8, 32)
SETTLE_QUICK_S, SETTLE_FULL_S = 15.0, 60.0  # the longest wait for a quiet machine before each direct row
PROFILED_C = 8  # --profile: flame graphs of the unix-socket gateway and its replica at this concurrency
DIRECT = "replica called directly (TCP)"
VIA_TCP = "through the gateway, replica over TCP"
VIA_UNIX = "through the gateway, replica over a unix socket"


def _measure(target: str, url: str, payload: bytes, concurrency: int, ctx: Context,
             trees: Callable[[], dict[str, cpu.Tree]], gw: hydro.Gateway,
             profile: flame.Request | None = None, **extra: Any) -> dict[str, Any]:
    """bench.load.measure with the CPU of ``trees`` over the measured wrk run, and the replicas serving."""
    point = measure(target, url, payload, concurrency, ctx.settings, ctx.scripts, processes=trees, profile=profile,
                    **extra)
    point["replicas"] = hydro.replica_counts(gw, ("iris",))
    return point


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
        def replica_only() -> dict[str, cpu.Tree]:  # the direct row: no gateway on the path
            return {"replica": hydro.gateway_trees(tcp_gw, {"replica": "iris"})["replica"]}

        def via(gw: hydro.Gateway) -> Callable[[], dict[str, cpu.Tree]]:
            return lambda: hydro.gateway_trees(gw, {"replica": "iris"})

        def both() -> dict[str, cpu.Tree]:
            return {f"{k} ({name})": t for name, gw in (("tcp", tcp_gw), ("unix", unix_gw))
                    for k, t in hydro.gateway_trees(gw, {"replica": "iris"}).items()}

        for c in CONCURRENCY:  # back to back at each concurrency: drift between rows stays small
            quiet = settle.wait_quiet(both, SETTLE_QUICK_S if ctx.quick else SETTLE_FULL_S)
            points.append(_measure(DIRECT, direct["endpoint"] + "/", payload, c, ctx, replica_only, tcp_gw,
                                   settled=quiet))
            points.append(_measure(VIA_TCP, tcp_gw.function_url("iris"), payload, c, ctx, via(tcp_gw), tcp_gw))
            profile = ctx.flame("uds", {"gateway": unix_gw.server.proc.pid,  # type: ignore[union-attr]
                                        "replica": over_socket["pid"]},
                                {"gateway": False}) if c == PROFILED_C else None
            points.append(_measure(VIA_UNIX, unix_gw.function_url("iris"), payload, c, ctx, via(unix_gw), unix_gw,
                                   profile))
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
                  "back to back at each concurrency, after waiting for a quiet machine (its 'settled')",
                  "cpu_us_per_request: user+system CPU of each process tree over the measured wrk run divided by "
                  "its requests (gateway: its process without its replicas; replica: the replica's gunicorn "
                  "master and workers; wrk; other: the rest of the machine's busy CPU); cpu_ceiling: the direct "
                  "row's total over the row's total, the ratio a CPU-bound machine allows"],
    }
