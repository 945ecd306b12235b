"""Mistakes caught at deploy, not at the first request (issue 14 point 7).

``lang: pytorch`` (no such template) and ``model: wine:nope`` (no such version or alias in the store)
are deploy errors naming the key, through the API and through ``hydro deploy``, and no replica is
started for them (``scale.min: 1`` would start one at once).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def hydro(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}, cwd=cwd, check=False)


def _wine(tmp_path: Path) -> None:
    from hydro_serving.store import open_store

    x, y = load_iris(return_X_y=True)
    path = tmp_path / "wine.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    open_store().upload(path, "wine")


def test_unknown_template_and_missing_model_are_deploy_errors(gateway: Any, tmp_path: Path) -> None:
    _wine(tmp_path)
    scale = {"min": 1, "max": 1, "idle": 300}
    status, out = gateway.admin("POST", "/system/functions",
                                {"service": "f1", "hydro": {"name": "f1", "lang": "pytorch", "model": "wine:1",
                                                            "scale": scale}})
    assert status == 400 and out["field"] == "hydro.lang", out
    assert "pytorch" in out["error"] and "sklearn" in out["error"] and "python3" in out["error"]  # lists the known

    for ref, what in (("wine:nope", "alias"), ("wine:9", "version"), ("merlot:1", "merlot")):
        status, out = gateway.admin("POST", "/system/functions",
                                    {"service": "f2", "hydro": {"name": "f2", "lang": "sklearn", "model": ref,
                                                                "scale": scale}})
        assert status == 400 and out["field"] == "hydro.model", out
        assert ref in out["error"] and what in out["error"], out
        assert "Traceback" not in out["error"]

    _, functions = gateway.admin("GET", "/system/functions")
    assert functions == []  # nothing stored, no replica started
    assert "Worker failed to boot" not in gateway.log()

    status, out = gateway.admin("POST", "/system/functions",  # the good one still deploys
                                {"service": "f2", "hydro": {"name": "f2", "lang": "sklearn", "model": "wine:1",
                                                            "scale": scale}})
    assert status == 202, out


def test_hydro_deploy_names_the_key(gateway: Any, tmp_path: Path) -> None:
    _wine(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    env = {"HYDRO_STATE": str(gateway.state_dir), "HYDRO_GATEWAY": gateway.url}
    (project / "stack.yml").write_text("functions:\n  f1:\n    lang: pytorch\n    model: wine:1\n")
    out = hydro("deploy", cwd=project, env=env)
    assert out.returncode != 0
    assert "f1" in out.stderr and "lang" in out.stderr and "sklearn" in out.stderr, out.stderr
    assert "created" not in out.stdout

    (project / "stack.yml").write_text("functions:\n  f1:\n    lang: sklearn\n    model: wine:nope\n")
    out = hydro("deploy", cwd=project, env=env)
    assert out.returncode != 0
    assert "f1" in out.stderr and "model" in out.stderr and "wine:nope" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    _, functions = gateway.admin("GET", "/system/functions")
    assert functions == []


def test_signature_against_the_model_at_deploy(gateway: Any, tmp_path: Path) -> None:
    """Issue 14 point 8 at deploy: a stack signature the store model cannot take (the gateway reads what the
    model declared from its manifest), and one a local model file cannot take (checked by hydro deploy)."""
    import numpy as np

    from hydro_serving.store import open_store

    x, y = load_iris(return_X_y=True)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    model = LogisticRegression(max_iter=500).fit(x, y)
    model.feature_names_in_ = np.array(names, dtype=object)  # as a DataFrame fit records (no pandas here)
    project = tmp_path / "project"
    project.mkdir()
    joblib.dump(model, project / "model.joblib")
    open_store().upload(project / "model.joblib", "flowers")

    foo = {"inputs": [{"name": "foo", "dtype": "float64", "shape": [-1]}]}
    status, out = gateway.admin("POST", "/system/functions", {"service": "f3", "hydro": {
        "name": "f3", "lang": "sklearn", "model": "flowers:1", "signature": foo}})
    assert status == 400 and out["field"] == "hydro.signature.inputs[0].name", out
    assert "'foo'" in out["error"] and "sepal_length" in out["error"] and "flowers:1" in out["error"], out
    good = {"inputs": [{"name": n, "dtype": "float64", "shape": [-1]} for n in names]}
    status, out = gateway.admin("POST", "/system/functions", {"service": "f3", "hydro": {
        "name": "f3", "lang": "sklearn", "model": "flowers:1", "signature": good}})
    assert status == 202, out

    env = {"HYDRO_STATE": str(gateway.state_dir), "HYDRO_GATEWAY": gateway.url}
    (project / "stack.yml").write_text(
        "functions:\n  local:\n    lang: sklearn\n    model: ./model.joblib\n    signature:\n"
        "      inputs: [{name: sepal_length, dtype: float64, shape: [-1]},\n"
        "               {name: petal, dtype: float64, shape: [-1]}]\n")
    out = hydro("deploy", cwd=project, env=env)
    assert out.returncode != 0
    assert "functions.local.signature.inputs[1].name" in out.stderr and "'petal'" in out.stderr, out.stderr
    assert "sepal_width" in out.stderr and "Traceback" not in out.stderr
    assert [f["name"] for f in gateway.admin("GET", "/system/functions")[1]] == ["f3"]
