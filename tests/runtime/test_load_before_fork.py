"""Loading a small sklearn model once in the server's master before it forks its workers (issue 18, cold starts).

The rule (runtime/server.py ``load_before_fork``): only several workers of a fork-safe template with a
small local model; anything else, and any failure, leaves the load to the workers exactly as before, so
a broken model still reports its cause on /_/ready and exits 3 (test_python3.py covers that path with
the default two workers). In process for the rule, then one real server.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from hydro_serving.runtime import server
from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.runtime.server import load_before_fork
from hydro_serving.stack.model import FunctionSpec
from hydro_serving.templates import get_template
from tests.conftest import free_port
from tests.runtime.helpers import base_env, get, post, start_runtime

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def spec_for(model: str, lang: str = "sklearn") -> FunctionSpec:
    return FunctionSpec.from_dict({"name": "iris", "lang": lang, "model": model})


def test_a_small_local_sklearn_model_is_loaded_once_for_several_workers(iris_model_file: Path) -> None:
    spec = spec_for(str(iris_model_file))
    preloaded = load_before_fork(spec, get_template("sklearn"), 2, env={})
    assert preloaded is not None and preloaded.seconds > 0
    app = create_app(spec, RuntimeConfig.from_env(spec, env={}), preloaded=preloaded)
    runtime = app.extensions["hydro_runtime"]
    assert runtime.loader.state == "ready" and runtime.loader._thread is None  # no background load ran
    assert runtime.loader.loaded is preloaded.loaded
    reply = app.test_client().post("/", json=ROWS)
    want = joblib.load(iris_model_file).predict(np.array(ROWS)).tolist()
    assert reply.status_code == 200 and reply.get_json() == want
    assert app.test_client().get("/_/ready").get_json()["load_seconds"] == preloaded.seconds


@pytest.mark.parametrize("case", ["one worker", "python3", "turned off", "store model", "too big", "missing",
                                  "hostile bytes"])
def test_otherwise_the_workers_load_as_before(case: str, iris_model_file: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    spec, workers, env, template = spec_for(str(iris_model_file)), 2, {}, get_template("sklearn")
    if case == "one worker":
        workers = 1
    elif case == "python3":
        template = get_template("python3")
    elif case == "turned off":
        env = {"HYDRO_LOAD_BEFORE_FORK": "0"}
    elif case == "store model":
        spec = spec_for("s3://hydro/models/iris/1")
    elif case == "too big":
        monkeypatch.setattr(server, "LOAD_BEFORE_FORK_MAX_BYTES", 10)
    elif case == "missing":
        spec = spec_for(str(tmp_path / "nowhere.joblib"))
    else:  # a model file that is not a pickle: the master's failed load is silent, the workers report it
        (tmp_path / "model.joblib").write_bytes(b"\x80\x05not a pickle at all")
        spec = spec_for(str(tmp_path / "model.joblib"))
    assert load_before_fork(spec, template, workers, env=env) is None


@pytest.mark.process
def test_a_two_worker_server_loads_in_the_master_and_serves(iris_model_file: Path, tmp_path: Path) -> None:
    spec = {"name": "iris", "lang": "sklearn", "model": str(iris_model_file)}
    proc = start_runtime(spec, free_port(), tmp_path, base_env(tmp_path / "home", {"HYDRO_WORKERS": "2"}))
    try:
        proc.wait_up()
        assert proc.wait_ready()[-1] == 200
        want = joblib.load(iris_model_file).predict(np.array(ROWS)).tolist()
        for _ in range(6):  # both workers (the kernel picks one per connection) answer from the master's model
            assert post(proc.port, "/", ROWS).json == want
        assert "before forking 2 workers" in proc.output()
        assert proc.output().count("loading (lang sklearn") == 0  # no worker loaded it again
        metrics = get(proc.port, "/metrics").body.decode()
        assert 'hydro_function_ready{function="iris"} 1.0' in metrics
    finally:
        proc.stop()


def test_the_replica_arbiter_forks_its_workers_without_gunicorns_random_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    import gunicorn.arbiter

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"the arbiter paused {seconds}s between forks")

    monkeypatch.setattr(gunicorn.arbiter.time, "sleep", no_sleep)
    arbiter = server.ReplicaArbiter.__new__(server.ReplicaArbiter)  # no gunicorn app: only the spawn loop
    arbiter._num_workers, arbiter.WORKERS = 3, {}
    spawned: list[int] = []

    def spawn_worker() -> None:
        spawned.append(len(spawned))
        arbiter.WORKERS[len(spawned)] = object()

    arbiter.spawn_worker = spawn_worker  # type: ignore[method-assign]
    arbiter.spawn_workers()
    assert spawned == [0, 1, 2]
