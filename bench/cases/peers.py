"""Case 4, peers side by side: the same iris model and load on MLServer, BentoML, KServe and MLflow.

Each peer runs from its own venv under ``bench/.venvs`` (built on the first full run and reused;
quick mode uses only venvs that already exist). A peer that cannot install or start is skipped
with the printed reason; the others still run. The baseline is the hand-written Flask app, and our
runtime (direct and through the gateway) is measured in the same case so every row shares it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from bench import hydro, procs, results
from bench.cases.hop import BASELINE, body, iris_spec
from bench.context import Context, gunicorn_app
from bench.load import measure
from bench.models import iris_model
from bench.peers.servers import PEERS
from bench.peers.venvs import ensure_venv, installed_versions

CONCURRENCY = (8, 32)


def run(ctx: Context) -> dict[str, Any]:
    payload = body()
    model_file = iris_model() / "model.joblib"
    points: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    peers_info: dict[str, Any] = {}

    def sweep(target: str, url: str, data: bytes) -> None:
        for c in CONCURRENCY:
            points.append(measure(target, url, data, c, ctx.settings, ctx.scripts))

    with gunicorn_app(ctx, "flask-iris-peers", "bench.apps.flask_iris:create_app()",
                      {"BENCH_MODEL": str(model_file)}) as (server, url):
        peers_info[BASELINE] = {"ready_seconds": server.ready_seconds}
        sweep(BASELINE, url, payload)
    server, url = hydro.start_runtime(iris_spec(), ctx.folder("peers-runtime"))
    try:
        peers_info["hydro direct"] = {"ready_seconds": server.ready_seconds}
        sweep("hydro direct", url + "/", payload)
    finally:
        server.stop()
    with hydro.Gateway(ctx.folder("peers-gateway")) as gw:
        gw.deploy(iris_spec())
        gw.warm("iris", payload)
        sweep("hydro via gateway", gw.function_url("iris"), payload)

    for peer in PEERS:
        venv = ensure_venv(peer.name, peer.requirements(), build=ctx.settings.build_venvs)
        if venv.python is None:
            skipped[peer.name] = venv.reason
            print(f"   skip {peer.name}: {venv.reason}", flush=True)
            continue
        work = ctx.folder(f"peer-{peer.name}")
        try:
            launch = peer.prepare(venv.python, work, model_file, procs.free_port)
            # the venv's bin first on PATH, as if activated: MLflow shells out to `uvicorn` by name
            env = {"PATH": f"{venv.python.parent}{os.pathsep}{os.environ.get('PATH', '')}", **launch.env}
            with procs.running(peer.name, launch.argv, ctx.folder("logs"), launch.ready_url, env=env,
                               cwd=launch.cwd, timeout=180) as srv:
                status, _, raw = procs.http("POST", launch.url, launch.body)
                if status != 200:
                    raise RuntimeError(f"answered {status} to the iris row: {raw[:300]!r}")
                peers_info[peer.name] = {"ready_seconds": srv.ready_seconds, "notes": launch.notes,
                                         "versions": installed_versions(venv.python, peer.version_of),
                                         "sample_response": raw[:200].decode(errors="replace")}
                sweep(peer.name, launch.url, launch.body)
        except Exception as exc:  # one broken peer must not hide the others
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            skipped[peer.name] = f"{type(exc).__name__}: {(lines[0] if lines else '')} ... {' | '.join(lines[-2:])}"
            print(f"   skip {peer.name}: {skipped[peer.name][-400:]}", flush=True)
        finally:
            shutil.rmtree(work / "bentoml-home", ignore_errors=True)
    results.add_ratios(points, BASELINE)
    return {
        "status": "ok", "title": "peers side by side (iris, one row per request, each peer's own protocol)",
        "baseline": BASELINE, "points": points, "peers": peers_info, "skipped": skipped,
        "notes": [f"skipped {name}: {why[:200]}" for name, why in skipped.items()]
                 + [f"{name}: {'; '.join(info['notes'])}" for name, info in peers_info.items() if info.get("notes")],
    }
