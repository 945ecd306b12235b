"""Case 5, adaptive batching: the iris function called directly at c=32, batching off vs on.

The baseline is the hand-written two-worker Flask app (the goal: with batching, a function called
directly at least matches it). Batching is the function's ``batching: {max_batch_size,
max_batch_delay_ms}``; the runtime's ``hydro_function_batch_size`` histogram proves batches formed
(its mean is reported). When the product does not take the key, the case is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

from bench import hydro, procs, results
from bench.cases.hop import BASELINE, body, iris_spec
from bench.context import Context, gunicorn_app
from bench.load import measure
from bench.models import iris_model

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


def _mean_batch(url: str) -> float | None:
    text = procs.http("GET", url + "/metrics")[2].decode()
    count = hydro.metric_value(text, "hydro_function_batch_size_count", function="iris")
    total = hydro.metric_value(text, "hydro_function_batch_size_sum", function="iris")
    return total / count if count else None


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
                 {"HYDRO_WORKERS": "1", "HYDRO_THREADS": "16"}))
    for target, spec, env in variants:
        server, url = hydro.start_runtime(spec, ctx.folder("batching-runtime"), env=env)
        try:
            p = measure(target, url + "/", payload, CONCURRENCY, ctx.settings, ctx.scripts)
            p["mean_batch_size"] = _mean_batch(url)
            points.append(p)
        finally:
            server.stop()
    results.add_ratios(points, BASELINE)
    return {
        "status": "ok", "title": f"adaptive batching at c={CONCURRENCY} (iris, one row per request)",
        "baseline": BASELINE, "points": points,
        "notes": [f"batching: {BATCHING}; mean batch sizes (runtime metric): "
                  + ", ".join(f"{p['target']}: {p.get('mean_batch_size') or 0:.1f}" for p in points[1:]),
                  "default rows run the runtime's default workers (min(2, cpus), each batching on its own); the "
                  "HYDRO_WORKERS=1 row is one process batching every request (the previous default)"],
    }
