"""Moving an alias then deploying rolls a function onto the version the alias now names (issue 14 point 10).

A real gateway (local provider), a real directory store that the *function* declares as its own
``HYDRO_STORE`` (the gateway's default store is another, empty one), real sklearn replicas and
the real ``hydro`` CLI. Before the fix the gateway pinned against its own store, failed, deployed
unpinned, and the redeploy after an alias move said ``unchanged`` while warm replicas kept
serving the old version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydro_serving.store import open_store
from tests.gateway_fixtures import gateway_factory  # noqa: F401 - the fixture

STACK = """\
version: 1.0
provider: {{name: hydro, gateway: {url}}}
functions:
  scorer:
    lang: sklearn
    model: iris:production
    environment: {{HYDRO_STORE: "{store}"}}
    scale: {{min: 0, max: 2, idle: 300}}
"""


def _hydro(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRO_STATE": str(state)}
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def _serving(gw: Any, name: str) -> list[dict[str, Any]]:
    return [i for i in gw.status(name)["status"]["instances"] if i["state"] == "ready"]


def test_alias_move_then_deploy_rolls_replicas_onto_the_new_version(gateway_factory: Any,  # noqa: F811
                                                                     iris_model_file: Path,
                                                                     tmp_path: Path) -> None:
    store_url = f"file://{tmp_path / 'fn-store'}"
    store = open_store(store_url)
    store.upload(iris_model_file, "iris")
    store.upload(iris_model_file, "iris")
    store.set_alias("iris", 1, "production")
    digest = store.get_manifest("iris:1").content_digest()
    gw = gateway_factory("--discover-interval", "0")
    stack = tmp_path / "stack.yml"
    stack.write_text(STACK.format(url=gw.url, store=store_url))

    first = _hydro("deploy", "-f", str(stack), state=gw.state_dir)
    assert first.returncode == 0, first.stderr
    assert "created   scorer" in first.stdout
    assert f"(model iris:production = iris:1@sha256:{digest})" in first.stdout
    status, _, body = gw.invoke("scorer", [[5.1, 3.5, 1.4, 0.2]])
    assert status == 200 and body == [0], body
    (old,) = _serving(gw, "scorer")

    again = _hydro("deploy", "-f", str(stack), state=gw.state_dir)  # nothing moved: nothing to roll
    assert again.returncode == 0 and "unchanged scorer" in again.stdout, again.stdout

    store.set_alias("iris", 2, "production")
    moved = _hydro("deploy", "-f", str(stack), state=gw.state_dir)
    assert moved.returncode == 0, moved.stderr
    assert "updated   scorer" in moved.stdout, moved.stdout
    assert f"(model iris:production = iris:2@sha256:{digest})" in moved.stdout

    # start new, drain old: a replica of the new generation serves, the old one is gone
    gw.wait_for(lambda: [(i["generation"], i["pid"] != old["pid"]) for i in _serving(gw, "scorer")] == [(2, True)],
                timeout=60, what="the replica of the new pin to replace the old one")
    gw.wait_for(lambda: not gw.pid_alive(old["pid"]), timeout=30, what="the old replica to drain and stop")
    status, _, body = gw.invoke("scorer", [[5.1, 3.5, 1.4, 0.2]])
    assert status == 200 and body == [0], body

    described = _hydro("describe", "scorer", "--gateway", gw.url, state=gw.state_dir)
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["modelPin"] == f"iris:2@sha256:{digest}"
    log = gw.log()
    assert f"function scorer: model iris:production resolved to iris:2@sha256:{digest}" in log
    assert f"moved from iris:1@sha256:{digest} to iris:2@sha256:{digest}" in log


def test_a_function_store_is_pinned_from_that_store_not_the_gateways(gateway_factory: Any,  # noqa: F811
                                                                      iris_model_file: Path, tmp_path: Path) -> None:
    """Attacker's case: the gateway's own store holds another model under the same name and version; the pin
    (and so the bytes a replica may load) must be the function's store's, never the other one's."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    other = tmp_path / "other" / "model.joblib"
    other.parent.mkdir()
    joblib.dump(DecisionTreeClassifier(max_depth=1).fit(x, y), other)
    open_store().upload(other, "iris")  # the gateway's store: iris:1 is a stump
    store_url = f"file://{tmp_path / 'fn-store'}"
    mine = open_store(store_url)
    mine.upload(iris_model_file, "iris")  # the function's store: iris:1 is the logistic regression
    gw = gateway_factory("--discover-interval", "0")
    out = gw.deploy({"name": "scorer", "lang": "sklearn", "model": "iris:1",
                     "environment": {"HYDRO_STORE": store_url}})
    assert out["modelPin"] == f"iris:1@sha256:{mine.get_manifest('iris:1').content_digest()}"
    assert out["modelPin"] != f"iris:1@sha256:{open_store().get_manifest('iris:1').content_digest()}"
    status, _, body = gw.invoke("scorer", [[6.3, 3.3, 6.0, 2.5]])
    assert status == 200 and body == [2], body
