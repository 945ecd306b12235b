"""Case 5, adaptive batching: iris and the demo's forest called directly at c=32, batching off vs on.

The forest (``pm-classifier``, 120 trees) is the model batching is for: its ``predict`` costs ~10 ms
for one row and ~16 ms for 32, so merged calls multiply throughput; iris (~0.1 ms a call) shows
the other end, where the batching wait costs more than it saves. Issue 18's goal: the forest with
batching >= 1.5x the forest without it, at c=32.

The baseline is the hand-written two-worker Flask app (the goal: with batching, a function called
directly at least matches it). Batching is the function's ``batching: {max_batch_size,
max_batch_delay_ms}``; the runtime's ``hydro_function_batch_size`` histogram proves batches formed
(its mean is reported). When the product does not take the key, the case is skipped with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from bench import hydro, procs, results
from bench.cases.hop import BASELINE, body, iris_spec
from bench.context import Context, gunicorn_app
from bench.load import measure
from bench.models import demo_models, iris_model

CONCURRENCY = 32
BATCHING = {"max_batch_size": 32, "max_batch_delay_ms": 2}


def unsupported_reason() -> str | None:
    """Why batching cannot be benchmarked with this product (None when it can)."""
    try:
        from hydro_serving.runtime import batching  # noqa: F401
        from hydro_serving.stack import FunctionSpec

        spec = FunctionSpec.from_dict(iris_spec(batching=BATCHING))
    except Exception as exc:  # the spec key or the module is missing: report, never fake
        return f"the product does not accept batching ({type(exc).__name__}: {exc})"
    if not getattr(spec, "batching", None) or not spec.batching.enabled:
        return "the function spec has no enabled batching after parsing"
    return None


FOREST_BASELINE = "flask+gunicorn (-w2 gthread x4), forest"


def forest_spec(**extra: Any) -> dict[str, Any]:
    return {"name": "forest", "lang": "sklearn", "model": str(demo_models()),
            "scale": {"min": 0, "max": 1, "idle": 600, "concurrency": 64}, **extra}


def forest_body() -> bytes:
    """One feature row (in the signature's order) per request, as the pipeline's classifier gets it."""
    from bench.cases.coldstart import classifier_body

    return json.dumps(classifier_body()[1][:1]).encode()


def _mean_batch(url: str, function: str = "iris") -> float | None:
    text = procs.http("GET", url + "/metrics")[2].decode()
    count = hydro.metric_value(text, "hydro_function_batch_size_count", function=function)
    total = hydro.metric_value(text, "hydro_function_batch_size_sum", function=function)
    return total / count if count else None


def _forest(ctx: Context) -> list[dict[str, Any]]:
    """The forest: Flask baseline, batching off, on (default workers), on with one batching worker."""
    payload = forest_body()
    points: list[dict[str, Any]] = []
    with gunicorn_app(ctx, "flask-forest", "bench.apps.flask_iris:create_app()",
                      {"BENCH_MODEL": str(demo_models() / "model.joblib")}) as (_server, url):
        points.append(measure(FOREST_BASELINE, url, payload, CONCURRENCY, ctx.settings, ctx.scripts))
    variants = (("forest, batching off", forest_spec(), None),
                (f"forest, batching {BATCHING['max_batch_size']}/{BATCHING['max_batch_delay_ms']}ms",
                 forest_spec(batching=BATCHING), None),
                ("forest, batching on, one batching worker (HYDRO_WORKERS=1)", forest_spec(batching=BATCHING),
                 {"HYDRO_WORKERS": "1"}))
    for target, spec, env in variants:
        server, url = hydro.start_runtime(spec, ctx.folder("batching-forest"), env=env)
        try:
            p = measure(target, url + "/", payload, CONCURRENCY, ctx.settings, ctx.scripts)
            p["mean_batch_size"] = _mean_batch(url, "forest")
            points.append(p)
        finally:
            server.stop()
    results.add_ratios(points, FOREST_BASELINE)
    off = points[1]["rps"]
    for p in points[2:]:
        p["vs_batching_off"] = round(p["rps"] / off, 3) if off else None
    return points


def run(ctx: Context) -> dict[str, Any]:
    reason = unsupported_reason()
    if reason:
        return {"status": "skipped", "title": "adaptive batching", "reason": reason}
    payload = body()
    points: list[dict[str, Any]] = []
    with gunicorn_app(ctx, "flask-iris-batching", "bench.apps.flask_iris:create_app()",
                      {"BENCH_MODEL": str(iris_model() / "model.joblib")}) as (_server, url):
        points.append(measure(BASELINE, url, payload, CONCURRENCY, ctx.settings, ctx.scripts))
    variants = (("hydro direct, batching off", iris_spec(), None),
                (f"hydro direct, batching {BATCHING['max_batch_size']}/{BATCHING['max_batch_delay_ms']}ms",
                 iris_spec(batching=BATCHING), None),
                ("hydro direct, batching on, HYDRO_WORKERS=1", iris_spec(batching=BATCHING),
                 {"HYDRO_WORKERS": "1"}))
    for target, spec, env in variants:
        server, url = hydro.start_runtime(spec, ctx.folder("batching-runtime"), env=env)
        try:
            p = measure(target, url + "/", payload, CONCURRENCY, ctx.settings, ctx.scripts)
            p["mean_batch_size"] = _mean_batch(url)
            points.append(p)
        finally:
            server.stop()
    results.add_ratios(points, BASELINE)
    forest = _forest(ctx)
    return {
        "status": "ok", "title": f"adaptive batching at c={CONCURRENCY} (iris and the demo's forest, one row per "
                                 f"request)",
        "baseline": BASELINE, "points": points + forest, "forest_baseline": FOREST_BASELINE,
        "notes": [f"batching: {BATCHING}; mean batch sizes (runtime metric): "
                  + ", ".join(f"{p['target']}: {p.get('mean_batch_size') or 0:.1f}" for p in points[1:]),
                  "default rows run the runtime's default workers (min(2, cpus), each batching on its own, with at "
                  "least max_batch_size threads each); the HYDRO_WORKERS=1 rows are one process batching every "
                  "request of the replica (one shared queue)",
                  "forest rows: ratios are to the Flask app serving the same forest; vs_batching_off is the goal's "
                  "figure (>= 1.5)"],
    }
