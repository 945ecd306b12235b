"""Case ``router``: what the router's direct path (issue 18 point 3) costs and saves, in one run.

Two parts, each against its own baseline measured in the same run, right before the rows it judges:

1. **1-stage pipeline vs its replica** (iris LogisticRegression, one row per request, c=1 and c=8):
   the stage's replica called directly (baseline), the 1-stage pipeline with the direct path (client
   -> gateway -> router -> replica) and the same pipeline with ``options: {direct: false}`` (client
   -> gateway -> router -> gateway -> replica). The stage called through the gateway (client ->
   gateway -> replica) is measured too: a pipeline still has that hop in front of its router, so the
   difference between it and the direct-path row is the router's own cost. Goals: p50 within +1 ms
   of the replica at c=1, >= 0.7x its throughput at c=8.
2. **2-stage demo pipeline vs a monolith** (product matching, c=8 and c=32): the hand-written Flask
   app doing both stages (baseline), the demo's pipeline with the direct path, and without it.
   Goal: >= 0.8x the monolith's throughput at c=8 and c=32.

Every pipeline is checked to take the path its row names (``X-Hydro-Stage-Timings`` ``direct``)
before it is measured. Every replica a part uses is started and ready before its first baseline, and
each baseline waits for a quiet machine (bench.settle). Every point records the CPU per request of
each process tree (bench.cpu) and the replicas per function; ``--profile`` adds flame graphs of the
gateway, the router replica and the stage replica during the 1-stage direct row at c=8 (bench.flame).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench import cpu, hydro, procs, results, settle
from bench.cases.hop import iris_spec
from bench.cases.pipeline import SEED_REQUEST, pipeline_specs
from bench.context import Context, gunicorn_app
from bench.load import measure
from bench.models import IRIS_ROW, demo_models

REPLICA = "iris replica, called directly"
VIA_GATEWAY = "iris via gateway (one hop: what a pipeline cannot beat)"
ONE_DIRECT = "1-stage pipeline, direct path"
ONE_GATEWAY = "1-stage pipeline, via gateway (direct: false)"
MONOLITH = "monolith flask+gunicorn (-w2 gthread x4)"
TWO_DIRECT = "2-stage pipeline, direct path"
TWO_GATEWAY = "2-stage pipeline, via gateway (direct: false)"
ONE_STAGE_C = (1, 8)
TWO_STAGE_C = (8, 32)
SCALE = {"min": 0, "max": 1, "idle": 600, "concurrency": 64}
PROFILED_C = 8  # --profile: flame graphs of the gateway, the router and the replica during the 1-stage direct row
SETTLE_QUICK_S, SETTLE_FULL_S = 15.0, 60.0  # the longest wait for a quiet machine before a baseline


def stage_paths(gw: hydro.Gateway, name: str, body: bytes) -> list[bool]:
    """Call until every stage shows the path the router settled on (the lease follows the first call)."""
    seen: list[bool] = []
    for _ in range(40):
        status, headers, raw = gw.invoke(name, body)
        if status != 200:
            raise RuntimeError(f"{name} answered {status}: {raw[:300]!r}")
        value = next(v for k, v in headers.items() if k.lower() == "x-hydro-stage-timings")
        seen = [bool(t.get("direct")) for t in json.loads(value)]
        if all(seen):
            break
        time.sleep(0.05)
    return seen


# the direct path leases TCP replicas only (a replica on a unix socket is private to its function), and
# wrk calls the replica itself as the baseline: both need the replicas on ports
TCP_REPLICAS = {"HYDRO_REPLICA_TRANSPORT": "tcp"}


def one_worker(point: dict[str, Any], tree: str) -> bool:
    """Whether one process of ``tree`` did >= 90% of its work in this point (the others idled)."""
    shares = (point.get("core_share_per_process") or {}).get(tree) or []
    return bool(shares) and shares[0] >= 0.9 * sum(shares) and sum(shares) > 0.2


def _tree(server: procs.Server) -> cpu.Tree:
    if server.proc is None:
        raise RuntimeError(f"{server.name} is not running")
    return cpu.Tree((server.proc.pid,))


def run(ctx: Context) -> dict[str, Any]:
    iris = json.dumps([IRIS_ROW]).encode()
    demo = SEED_REQUEST.read_bytes()
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    notes: list[str] = []
    settle_s = SETTLE_QUICK_S if ctx.quick else SETTLE_FULL_S

    with hydro.Gateway(ctx.folder("router-gateway"), env=TCP_REPLICAS) as gw:
        gw.deploy(iris_spec())
        for name, direct in (("iris-pipe", True), ("iris-pipe-gw", False)):
            gw.deploy({"name": name, "lang": "router", "chain": [{"variants": {"iris": 100}}], "scale": SCALE,
                       "options": {"direct": direct}})
            gw.warm(name, iris)
        paths = {name: stage_paths(gw, name, iris) for name in ("iris-pipe", "iris-pipe-gw")}
        notes.append(f"stage paths before load (direct per stage): {paths}")
        names = ("iris", "iris-pipe", "iris-pipe-gw")
        replica = next(r["endpoint"] for r in gw.replicas("iris") if r.get("endpoint"))

        def trees(router: str | None) -> Callable[[], dict[str, cpu.Tree]]:
            return lambda: hydro.gateway_trees(gw, {"replica": "iris", **({"router": router} if router else {})})

        def point(target: str, url: str, c: int, router: str | None, **extra: Any) -> dict[str, Any]:
            p = measure(target, url, iris, c, ctx.settings, ctx.scripts, processes=trees(router), **extra)
            p["replicas"] = hydro.replica_counts(gw, names)
            return p

        for c in ONE_STAGE_C:  # back to back per concurrency: the replica, then each pipeline path
            hydro.ready_replicas(gw, {name: 1 for name in names})
            quiet = settle.wait_quiet(lambda: hydro.gateway_trees(gw, {n: n for n in names}), settle_s)
            one.append(point(REPLICA, replica + "/", c, None, settled=quiet))
            one.append(point(VIA_GATEWAY, gw.function_url("iris"), c, None))
            profile = ctx.flame("router", {"gateway": gw.server.proc.pid,  # type: ignore[union-attr]
                                           "router": gw.replica_pids("iris-pipe")[0],
                                           "replica": gw.replica_pids("iris")[0]},
                                {"gateway": False}) if c == PROFILED_C else None
            one.append(point(ONE_DIRECT, gw.function_url("iris-pipe"), c, "iris-pipe", profile=profile))
            one.append(point(ONE_GATEWAY, gw.function_url("iris-pipe-gw"), c, "iris-pipe-gw"))
        counted = gw.admin("GET", "/system/function/iris")[1]["invocationCount"]
        notes.append(f"iris invocationCount after the 1-stage rows (direct calls included, as reported by the "
                     f"router's leases): {counted}")

    # the monolith and the pipelines run side by side and are measured interleaved per concurrency, so a
    # change of the machine's load (shared with others) hits the baseline and the rows it judges alike
    with gunicorn_app(ctx, "flask-monolith", "bench.apps.flask_monolith:create_app()",
                      {"BENCH_MODEL_DIR": str(demo_models())}) as (server, url), \
            hydro.Gateway(ctx.folder("router-pipeline-gateway"), env=TCP_REPLICAS) as gw:
        features, classifier, router = pipeline_specs()
        gw.deploy(features)
        gw.deploy(classifier)
        for name, direct in (("pm-pipeline", True), ("pm-pipeline-gw", False)):
            gw.deploy({**router, "name": name, "options": {"direct": direct}})
            gw.warm(name, demo)
        paths = {name: stage_paths(gw, name, demo) for name in ("pm-pipeline", "pm-pipeline-gw")}
        notes.append(f"demo stage paths before load: {paths}")
        # every replica the rows will use is started before any baseline: each function at its scale.max,
        # which the pipeline rows reach anyway under load (a replica starting during a point is measured
        # too: its pids join the tree, and the point's "replicas" shows the count after the run)
        everything = {name: hydro.scale_max(gw, name) for name in (features["name"], classifier["name"],
                                                                     "pm-pipeline", "pm-pipeline-gw")}
        labels = {"features": features["name"], "classifier": classifier["name"]}

        def demo_trees(router_name: str | None) -> Callable[[], dict[str, cpu.Tree]]:
            return lambda: {"monolith": _tree(server), **hydro.gateway_trees(
                gw, {**labels, **({"router": router_name} if router_name else {})})}

        def demo_point(target: str, url: str, c: int, router_name: str | None, **extra: Any) -> dict[str, Any]:
            p = measure(target, url, demo, c, ctx.settings, ctx.scripts, processes=demo_trees(router_name), **extra)
            p["replicas"] = hydro.replica_counts(gw, tuple(everything))
            return p

        for c in TWO_STAGE_C:
            hydro.ready_replicas(gw, everything)
            quiet = settle.wait_quiet(lambda: {"monolith": _tree(server), **hydro.gateway_trees(
                gw, {n: n for n in everything})}, settle_s)
            two.append(demo_point(MONOLITH, url, c, None, settled=quiet))
            two.append(demo_point(TWO_DIRECT, gw.function_url("pm-pipeline"), c, "pm-pipeline"))
            two.append(demo_point(TWO_GATEWAY, gw.function_url("pm-pipeline-gw"), c, "pm-pipeline-gw"))
        notes.append(f"demo functions started at their scale.max before the first baseline: {everything}")

    results.add_ratios(one, REPLICA)
    results.add_ratios(two, MONOLITH)
    for p in two:
        if p["target"] == MONOLITH and one_worker(p, "monolith"):
            notes.append(f"c={p['concurrency']}: the monolith served on one of its two gunicorn workers (cores per "
                         f"process {p['core_share_per_process']['monolith']}): wrk opens its connections at once "
                         "and one gthread worker accepted them all, so this baseline had one GIL, not two")
    notes.append("before each baseline the case waits until every replica it uses is ready and idle, the machine "
                 "mostly idle and the load average not rising (at most "
                 f"{settle_s:.0f}s); the baseline's 'settled' says what it saw")
    notes.append("cpu_us_per_request per process tree over the measured wrk run (gateway without its replicas; "
                 "replica, features, classifier: every replica of that function with its workers; router: the "
                 "row's router replica; monolith: the gunicorn app); cpu_ceiling = baseline total / row total")
    return {
        "status": "ok", "title": "router direct path: 1-stage vs its replica, 2-stage demo vs a monolith",
        "baseline": f"{REPLICA} (1-stage rows); {MONOLITH} (2-stage rows)",
        "points": one + two, "notes": notes,
    }
