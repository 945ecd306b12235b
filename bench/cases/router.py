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
before it is measured.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import hydro, results
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


def run(ctx: Context) -> dict[str, Any]:
    iris = json.dumps([IRIS_ROW]).encode()
    demo = SEED_REQUEST.read_bytes()
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    notes: list[str] = []

    with hydro.Gateway(ctx.folder("router-gateway"), env=TCP_REPLICAS) as gw:
        gw.deploy(iris_spec())
        for name, direct in (("iris-pipe", True), ("iris-pipe-gw", False)):
            gw.deploy({"name": name, "lang": "router", "chain": [{"variants": {"iris": 100}}], "scale": SCALE,
                       "options": {"direct": direct}})
            gw.warm(name, iris)
        paths = {name: stage_paths(gw, name, iris) for name in ("iris-pipe", "iris-pipe-gw")}
        notes.append(f"stage paths before load (direct per stage): {paths}")
        replica = next(r["endpoint"] for r in gw.replicas("iris") if r.get("endpoint"))
        for c in ONE_STAGE_C:  # back to back per concurrency: the replica, then each pipeline path
            one.append(measure(REPLICA, replica + "/", iris, c, ctx.settings, ctx.scripts))
            one.append(measure(VIA_GATEWAY, gw.function_url("iris"), iris, c, ctx.settings, ctx.scripts))
            one.append(measure(ONE_DIRECT, gw.function_url("iris-pipe"), iris, c, ctx.settings, ctx.scripts))
            one.append(measure(ONE_GATEWAY, gw.function_url("iris-pipe-gw"), iris, c, ctx.settings, ctx.scripts))
        counted = gw.admin("GET", "/system/function/iris")[1]["invocationCount"]
        notes.append(f"iris invocationCount after the 1-stage rows (direct calls included, as reported by the "
                     f"router's leases): {counted}")

    # the monolith and the pipelines run side by side and are measured interleaved per concurrency, so a
    # change of the machine's load (shared with others) hits the baseline and the rows it judges alike
    with gunicorn_app(ctx, "flask-monolith", "bench.apps.flask_monolith:create_app()",
                      {"BENCH_MODEL_DIR": str(demo_models())}) as (_server, url), \
            hydro.Gateway(ctx.folder("router-pipeline-gateway"), env=TCP_REPLICAS) as gw:
        features, classifier, router = pipeline_specs()
        gw.deploy(features)
        gw.deploy(classifier)
        for name, direct in (("pm-pipeline", True), ("pm-pipeline-gw", False)):
            gw.deploy({**router, "name": name, "options": {"direct": direct}})
            gw.warm(name, demo)
        paths = {name: stage_paths(gw, name, demo) for name in ("pm-pipeline", "pm-pipeline-gw")}
        notes.append(f"demo stage paths before load: {paths}")
        for c in TWO_STAGE_C:
            two.append(measure(MONOLITH, url, demo, c, ctx.settings, ctx.scripts))
            two.append(measure(TWO_DIRECT, gw.function_url("pm-pipeline"), demo, c, ctx.settings, ctx.scripts))
            two.append(measure(TWO_GATEWAY, gw.function_url("pm-pipeline-gw"), demo, c, ctx.settings, ctx.scripts))
        replicas = {s["name"]: len(gw.replicas(s["name"])) for s in (features, classifier)}
        notes.append(f"demo stages keep the demo's scale settings; replicas at the end: {replicas}")

    results.add_ratios(one, REPLICA)
    results.add_ratios(two, MONOLITH)
    return {
        "status": "ok", "title": "router direct path: 1-stage vs its replica, 2-stage demo vs a monolith",
        "baseline": f"{REPLICA} (1-stage rows); {MONOLITH} (2-stage rows)",
        "points": one + two, "notes": notes,
    }
