"""Framework versions a model was trained with: recorded at upload, pinned in builds, warned about at load
(issue 14 point 13).

Real models trained here, a real directory store, the real builder writing a build context, the
real venv requirement pinning (pip is not run: the pinned file and the venv key are what
changes), and the runtime's Flask app in-process for the load-time check.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn

from hydro_serving.builder.context import build_contexts
from hydro_serving.errors import StoreError, ValidationError
from hydro_serving.gateway.providers.venvs import _pinned_template_file, requirement_files, trained_versions, venv_key
from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.stack import FunctionSpec, load_stack
from hydro_serving.store import open_store
from hydro_serving.store.manifest import Manifest
from hydro_serving.templates import get_template

STACK = """\
version: 1.0
provider: {{name: hydro, store: "{store}"}}
functions:
  iris:
    lang: sklearn
    model: iris:1
  local:
    lang: sklearn
    model: ./iris.joblib
"""


def test_upload_records_the_versions_of_the_framework_that_trained_the_model(iris_model_file: Path) -> None:
    manifest = open_store().upload(iris_model_file, "iris")
    assert manifest.framework_versions["scikit-learn"] == sklearn.__version__
    assert manifest.framework_versions["numpy"] == np.__version__
    stored = open_store().get_manifest("iris:1")
    assert stored.framework_versions == manifest.framework_versions
    assert json.loads(stored.to_json())["framework_versions"]["scikit-learn"] == sklearn.__version__


def test_a_discovered_version_records_no_versions_it_cannot_know(iris_model_file: Path) -> None:
    manifest = open_store().upload(iris_model_file, "found", framework="onnx", origin="discovery")
    assert manifest.framework_versions == {}
    assert "framework_versions" not in json.loads(manifest.to_json())  # older manifests keep their bytes


@pytest.mark.parametrize("versions, field", [
    ({"scikit-learn\n--index-url http://evil": "1.0"}, "framework_versions"),
    ({"scikit-learn": "1.0 --extra-index-url=http://evil"}, "framework_versions.scikit-learn"),
    ({"scikit-learn": 1.0}, "framework_versions.scikit-learn"),
    (["scikit-learn==1.0"], "framework_versions"),
])
def test_a_hostile_framework_versions_field_is_refused_naming_it(iris_model_file: Path, versions: Any,
                                                                  field: str) -> None:
    """A bucket writer must not smuggle requirement lines (an index URL) into builds through a manifest."""
    good = json.loads(open_store().upload(iris_model_file, "iris").to_json())
    with pytest.raises(StoreError) as caught:
        Manifest.from_dict({**good, "framework_versions": versions})
    assert caught.value.field == field
    with pytest.raises(ValidationError) as caught:
        open_store().upload(iris_model_file, "iris", framework_versions=versions)
    assert caught.value.field == field and caught.value.status == 400


def test_the_build_pins_the_template_requirements_to_the_trained_versions(tmp_path: Path,
                                                                         iris_model_file: Path) -> None:
    store_url = f"file://{tmp_path / 'store'}"
    open_store(store_url).upload(iris_model_file, "iris",
                                 framework_versions={"scikit-learn": "1.9.1", "numpy": "2.4.6", "scipy": "1.17.1"})
    project = tmp_path / "project"
    project.mkdir()
    (project / "iris.joblib").write_bytes(iris_model_file.read_bytes())
    (project / "stack.yml").write_text(STACK.format(store=store_url))
    contexts = build_contexts(load_stack(project / "stack.yml"))
    pinned = (contexts["iris"] / "requirements" / "template.txt").read_text().splitlines()
    assert pinned == ["scikit-learn==1.9.1", "joblib>=1.3", "numpy==2.4.6", "scipy==1.17.1"]
    # a local model has no manifest: the template's requirements as they are
    local = (contexts["local"] / "requirements" / "template.txt").read_text()
    assert local == "scikit-learn>=1.3\njoblib>=1.3\nnumpy>=1.26\n"


def test_an_isolated_venv_is_pinned_to_the_trained_versions(tmp_path: Path, iris_model_file: Path) -> None:
    store = open_store()
    store.upload(iris_model_file, "iris", framework_versions={"scikit-learn": "1.9.1", "numpy": "2.4.6"})
    store.upload(iris_model_file, "iris", framework_versions={"scikit-learn": "1.8.0", "numpy": "2.4.6"})
    template = get_template("sklearn")
    keys = set()
    for ref, sk in (("iris:1", "1.9.1"), ("iris:2", "1.8.0"), ("iris:latest", "1.8.0")):
        trained = trained_versions(FunctionSpec(name="f", lang="sklearn", model=ref))
        assert trained == {"scikit-learn": sk, "numpy": "2.4.6"}
        files = _pinned_template_file(tmp_path / "venvs", template, requirement_files(template, None), trained)
        assert files[0][1].read_text().splitlines() == [f"scikit-learn=={sk}", "joblib>=1.3", "numpy==2.4.6"]
        keys.add(venv_key(files, "layered"))
    assert len(keys) == 2  # a model trained with another release gets its own venv; the same one shares it


def test_the_runtime_warns_at_load_and_reports_the_difference(iris_model_file: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    open_store().upload(iris_model_file, "old", framework_versions={"scikit-learn": "0.24.2",
                                                                     "numpy": np.__version__})
    caplog.set_level(logging.WARNING, logger="hydro.runtime")
    app = create_app(FunctionSpec(name="old", lang="sklearn", model="old:1"),
                     RuntimeConfig(load_failure_exit_after=None))
    try:
        client = app.test_client()
        assert client.get("/_/ready?wait=10").status_code == 200
        assert client.post("/", json=[[5.1, 3.5, 1.4, 0.2]]).get_json() == [0]  # a warning, not a refusal
        meta = client.get("/v2/models/old").get_json()
    finally:
        app.extensions["hydro_runtime"].shutdown()
    assert meta["parameters"]["framework_versions"] == {"scikit-learn": "0.24.2", "numpy": np.__version__}
    assert meta["parameters"]["framework_version_mismatch"] == {
        "scikit-learn": {"trained": "0.24.2", "installed": sklearn.__version__}}
    assert (f"function old: model old:1 was trained with scikit-learn 0.24.2 (here {sklearn.__version__})"
            in caplog.text)


def test_hydro_model_upload_records_and_show_prints_them(tmp_path: Path, iris_model_file: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI path a user takes: ``hydro model upload`` (no framework imported by the CLI) then ``show``."""
    from tests.store.conftest import run_cli

    sig = tmp_path / "sig.yml"
    sig.write_text("inputs:\n  - {name: x, dtype: float64, shape: [-1, 4], nullable: true}\n")
    code, out, err = run_cli(["model", "upload", str(iris_model_file), "--name", "iris", "--signature", str(sig)],
                             capsys)
    assert (code, out.strip()) == (0, "iris:1"), err
    code, out, _ = run_cli(["model", "show", "iris:1", "--json"], capsys)
    assert json.loads(out)["framework_versions"]["scikit-learn"] == sklearn.__version__
    code, out, _ = run_cli(["model", "show", "iris:1"], capsys)
    assert "trained with: joblib" in out and f"scikit-learn {sklearn.__version__}" in out
    assert "in  x: float64 [-1, 4] nullable" in out
