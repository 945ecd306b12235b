"""Case ``runtime`` (issue 18, point 1): the runtime called directly vs the hand-written Flask app, interleaved.

Both servers run at once (the same iris model, two workers each: gunicorn ``-w2 gthread x4`` for the
baseline, the runtime's defaults for ours) and are measured alternately, round after round, at each
concurrency; the figure is the median over rounds of the per-round ratio. On a machine shared with
other work the load drifts by the minute, and the hop case's sequential sweeps (baseline first,
runtime later) mostly measure that drift; interleaving cancels most of it.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench import hydro
from bench.cases.hop import BASELINE, body, iris_spec
from bench.context import Context, gunicorn_app
from bench.load import measure
from bench.models import iris_model

CONCURRENCY = (1, 8, 32)
TARGET = "hydro runtime direct"


def run(ctx: Context) -> dict[str, Any]:
    payload = body()
    rounds = 3 if ctx.quick else 5
    points: list[dict[str, Any]] = []
    ratios: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
    with gunicorn_app(ctx, "flask-iris-interleaved", "bench.apps.flask_iris:create_app()",
                      {"BENCH_MODEL": str(iris_model() / "model.joblib")}) as (_flask, flask_url):
        server, url = hydro.start_runtime(iris_spec(), ctx.folder("runtime-interleaved"))
        try:
            for r in range(rounds):
                for c in CONCURRENCY:
                    base = measure(BASELINE, flask_url, payload, c, ctx.settings, ctx.scripts, own_client=False,
                                   round=r)
                    ours = measure(TARGET, url + "/", payload, c, ctx.settings, ctx.scripts, own_client=False,
                                   round=r)
                    points += [base, ours]
                    if base["rps"]:
                        ratios[c].append(ours["rps"] / base["rps"])
        finally:
            server.stop()
    summary = {str(c): {"median_ratio_rps": round(statistics.median(v), 3), "min": round(min(v), 3),
                        "max": round(max(v), 3), "rounds": len(v)} for c, v in ratios.items() if v}
    rows = [f"{'c':>4} {'median req/s ratio':>20} {'min':>8} {'max':>8}"]
    rows += [f"{c:>4} {s['median_ratio_rps']:>19.2f}x {s['min']:>7.2f}x {s['max']:>7.2f}x" for c, s in summary.items()]
    return {
        "status": "ok", "title": "runtime direct vs hand-written Flask, interleaved rounds (iris, one row per request)",
        "baseline": BASELINE, "points": points, "summary": summary, "rows": rows,
        "notes": [f"{rounds} rounds; in each round and at each concurrency the baseline then the runtime, back to "
                  "back, both servers up the whole time; the figure is the median per-round req/s ratio"],
    }
