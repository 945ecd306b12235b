"""Case 2, pipeline vs monolith: the demo's product matching as two functions behind the router,
against one hand-written Flask app that runs both stages in one process (the baseline).

The pipeline is the demo's stack.yml (pm-features -> pm-classifier, with their signatures and
scale settings) loaded with the product's own stack loader. The 10% ONNX variant is left out so
both sides run exactly the same two stages (features + random forest); the classifier model is
the demo's, trained by the demo's training code and served from a local folder.
"""

from __future__ import annotations

import json
from typing import Any

from bench import hydro, results
from bench.context import REPO, Context, gunicorn_app
from bench.load import measure
from bench.models import demo_models

CONCURRENCY = (8, 32)
BASELINE = "monolith flask+gunicorn (-w2 gthread x4)"
SEED_REQUEST = REPO / "functions" / "pm-features" / "product-matching-request.json"


def pipeline_specs() -> list[dict[str, Any]]:
    """pm-features, pm-classifier (model from the local cache) and a two-stage router, from stack.yml."""
    from hydro_serving.stack import load_stack

    stack = load_stack(REPO / "stack.yml")
    features = stack.function("pm-features").resolved(stack.root).to_dict()
    classifier = stack.function("pm-classifier").to_dict()
    classifier["model"] = str(demo_models())
    router = {"name": "pm-pipeline", "lang": "router", "chain": [{"variants": {"pm-features": 100}},
                                                                  {"variants": {"pm-classifier": 100}}]}
    return [features, classifier, router]


def run(ctx: Context) -> dict[str, Any]:
    body = SEED_REQUEST.read_bytes()
    pairs = len(json.loads(body))
    points: list[dict[str, Any]] = []
    with gunicorn_app(ctx, "flask-monolith", "bench.apps.flask_monolith:create_app()",
                      {"BENCH_MODEL_DIR": str(demo_models())}) as (_server, url):
        for c in CONCURRENCY:
            points.append(measure(BASELINE, url, body, c, ctx.settings, ctx.scripts))
    specs = pipeline_specs()
    with hydro.Gateway(ctx.folder("pipeline-gateway")) as gw:
        for spec in specs:
            gw.deploy(spec)
        gw.warm("pm-pipeline", body)
        for c in CONCURRENCY:
            points.append(measure("hydro 2-stage router pipeline", gw.function_url("pm-pipeline"), body, c,
                                  ctx.settings, ctx.scripts))
        replicas = {s["name"]: len(gw.replicas(s["name"])) for s in specs}
    results.add_ratios(points, BASELINE)
    return {
        "status": "ok", "title": f"pipeline vs monolith (product matching, {pairs} pairs per request)",
        "baseline": BASELINE, "points": points,
        "notes": [f"stages keep the demo's scale settings; replicas at the end: {replicas}",
                  "the demo's 10% ONNX variant is left out so both sides run the same two stages"],
    }
