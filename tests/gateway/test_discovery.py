"""The gateway discovers models that other tools put into the store, then serves them.

Only finished uploads (two passes saw the same files) of safe formats are adopted; pickle only
when the operator opts in with ``--discover-unsafe-formats``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hydro_serving.store import open_store

IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def iris_onnx(tmp_path_factory: pytest.TempPathFactory, iris_model_file: Path) -> Path:
    """The iris model converted to ONNX (a safe format: loading it runs no code)."""
    import joblib
    from skl2onnx import to_onnx

    model = joblib.load(iris_model_file)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(to_onnx(model, np.zeros((1, 4), dtype=np.float32), options={"zipmap": False})
                     .SerializeToString())
    return path


def _drop(name: str, source: Path) -> Path:
    """Copy a model into the directory store the way another client would (``aws s3 cp`` for S3)."""
    root = Path(os.environ["HYDRO_STORE"].removeprefix("file://"))
    dropped = root / "models" / name / source.name
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(source.read_bytes())
    return dropped


def _versions(name: str) -> list[int]:
    try:
        return open_store().versions(name)
    except Exception:  # NotFound until a pass adopted it
        return []


def test_a_safe_format_copied_into_the_store_becomes_a_version_the_gateway_serves(gateway_factory: Any,
                                                                                  iris_onnx: Path) -> None:
    _drop("iris-dropped", iris_onnx)
    gw = gateway_factory("--discover-interval", "0.5")
    gw.wait_for(lambda: _versions("iris-dropped") == [1], timeout=30, what="discovery of iris-dropped")
    manifest = open_store().get_manifest("iris-dropped:1")
    assert (manifest.framework, manifest.origin) == ("onnx", "discovery")

    gw.deploy({"name": "iris", "lang": "onnx", "model": "iris-dropped:1"})
    status, _, body = gw.invoke("iris", IRIS_ROW)
    assert status == 200, body


def test_a_dropped_pickle_is_adopted_only_when_the_operator_opts_in(gateway_factory: Any,
                                                                    iris_model_file: Path) -> None:
    dropped = _drop("iris-pickle", iris_model_file)
    gw = gateway_factory("--discover-interval", "0.3")
    gw.wait_for(lambda: "--discover-unsafe-formats" in gw.log(), timeout=30, what="a discovery pass")
    time.sleep(1.0)  # more passes; not a timing assertion
    assert _versions("iris-pickle") == [] and dropped.exists()
    assert gw.log().count("pickle-based files") == 1  # reported once, not at every pass
    gw.stop()

    gw = gateway_factory("--discover-interval", "0.3", "--discover-unsafe-formats")
    gw.wait_for(lambda: _versions("iris-pickle") == [1], timeout=30, what="discovery with the opt-in")
    gw.deploy({"name": "iris", "lang": "sklearn", "model": "iris-pickle:1"})
    status, _, body = gw.invoke("iris", IRIS_ROW)
    assert (status, body) == (200, [0])


def test_discovery_off_leaves_files_alone(gateway_factory: Any, iris_onnx: Path) -> None:
    dropped = _drop("untouched", iris_onnx)
    gw = gateway_factory("--discover-interval", "0")
    time.sleep(1.0)  # a window in which a discovery pass would have run; not a timing assertion
    assert dropped.exists()
    assert gw.admin("GET", "/system/functions")[0] == 200


def test_a_gateway_without_the_opt_in_refuses_to_deploy_a_discovered_pickle(gateway_factory: Any,
                                                                            iris_model_file: Path) -> None:
    _drop("adopted", iris_model_file)
    assert [m.ref for m in open_store().discover(allow_unsafe=True).added] == ["adopted:1"]  # opted in elsewhere
    gw = gateway_factory("--discover-interval", "0")
    status, out = gw.admin("POST", "/system/functions", {"service": "f", "hydro": {
        "name": "f", "lang": "sklearn", "model": "adopted"}})
    assert status == 403 and "created by discovery" in out["error"] and out["code"] == "untrusted_model", out
