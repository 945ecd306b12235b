"""Case 1, hop overhead: one iris LogisticRegression behind 0, 1 and 2 platform hops.

(a) the hand-written Flask+gunicorn app (baseline), (b) the function runtime called directly,
(c) the same function through the gateway, (d) a one-stage router pipeline through the gateway
(client -> gateway -> router -> gateway -> function). Functions are deployed with ``scale.max: 1``
so (b), (c) and (d) compare the same single runtime process with the hops in front of it.
A fifth row, (b) with ``HYDRO_WORKERS=1``, is the runtime's previous default (one process, 8
threads), kept as the A/B of the current default (``min(2, cpus)`` workers x 4 threads for model
templates) in the same run.
"""

from __future__ import annotations

import json
from typing import Any

from bench import hydro, results
from bench.context import Context, gunicorn_app
from bench.load import measure
from bench.models import IRIS_ROW, iris_model

CONCURRENCY = (1, 8, 32)
BASELINE = "flask+gunicorn (-w2 gthread x4)"
SAME_REPLICA = "hydro gateway's replica, called directly"


def iris_spec(name: str = "iris", **extra: Any) -> dict[str, Any]:
    """The iris function as the gateway and the runtime read it (FunctionSpec.to_dict() form)."""
    return {"name": name, "lang": "sklearn", "model": str(iris_model()),
            "scale": {"min": 0, "max": 1, "idle": 600, "concurrency": 64}, **extra}


def body() -> bytes:
    return json.dumps([IRIS_ROW]).encode()


def run(ctx: Context) -> dict[str, Any]:
    payload = body()
    points: list[dict[str, Any]] = []
    ready: dict[str, float | None] = {}

    def sweep(target: str, url: str) -> None:
        for c in CONCURRENCY:
            points.append(measure(target, url, payload, c, ctx.settings, ctx.scripts))

    with gunicorn_app(ctx, "flask-iris", "bench.apps.flask_iris:create_app()",
                      {"BENCH_MODEL": str(iris_model() / "model.joblib")}) as (server, url):
        ready[BASELINE] = server.ready_seconds
        sweep(BASELINE, url)

    for target, env in (("hydro runtime direct", None), ("hydro runtime direct, HYDRO_WORKERS=1",
                                                           {"HYDRO_WORKERS": "1"})):
        server, url = hydro.start_runtime(iris_spec(), ctx.folder("hop-runtime"), env=env)
        try:
            ready[target] = server.ready_seconds
            sweep(target, url + "/")
        finally:
            server.stop()

    # replicas on TCP ports (HYDRO_REPLICA_TRANSPORT=tcp), so wrk can call the same replica directly; the
    # default unix-socket path is measured against it in the uds case
    with hydro.Gateway(ctx.folder("hop-gateway"), env={"HYDRO_REPLICA_TRANSPORT": "tcp"}) as gw:
        gw.deploy(iris_spec())
        gw.deploy({"name": "iris-pipe", "lang": "router", "chain": [{"variants": {"iris": 100}}],
                   "scale": {"min": 0, "max": 1, "idle": 600, "concurrency": 64}})
        gw.warm("iris", payload)
        gw.warm("iris-pipe", payload)
        replica = next(r["endpoint"] for r in gw.replicas("iris") if r.get("endpoint"))
        for c in CONCURRENCY:  # the same replica with and without the gateway, back to back: the hop alone
            points.append(measure(SAME_REPLICA, replica + "/", payload, c, ctx.settings, ctx.scripts))
            points.append(measure("hydro via gateway", gw.function_url("iris"), payload, c, ctx.settings,
                                  ctx.scripts))
        sweep("hydro 1-stage router pipeline", gw.function_url("iris-pipe"))

    results.add_ratios(points, BASELINE)
    return {
        "status": "ok", "title": "hop overhead (iris LogisticRegression, one row per request)",
        "baseline": BASELINE, "points": points, "ready_seconds": ready,
        "notes": ["functions deployed with scale {max: 1, concurrency: 64}: one runtime replica (the runtime's "
                  "defaults: min(2, cpus) workers x 4 threads for a model template) behind every hop",
                  "the HYDRO_WORKERS=1 row is the previous default (1 worker x 8 threads), the A/B of the new one",
                  "the gateway's own replica is measured right before each gateway row: their difference is the "
                  "gateway hop, free of the drift between separately started processes"],
    }
