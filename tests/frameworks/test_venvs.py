"""Per-function virtual environments: two functions pinning different versions of ``six`` (from the package
index) served side by side by real runtime processes, each reporting its own version; cache, lock, errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.builder.templates import get_template
from hydro_serving.errors import ConfigError
from hydro_serving.gateway.providers.venvs import ensure_function_venv, isolation_mode, replica_python
from hydro_serving.stack import FunctionSpec
from tests.conftest import free_port
from tests.runtime.helpers import Proc, base_env, post

pytestmark = pytest.mark.slow  # builds venvs with pip from the package index

HANDLER = '''
import six


def handle(payload, context):
    return {"six": six.__version__, "file": six.__file__}
'''
VERSIONS = ("1.16.0", "1.15.0")


def start_in_venv(python: Path, spec: dict[str, Any], workdir: Path) -> Proc:
    """The runtime server run by the venv's interpreter, as the local provider runs an isolated replica."""
    port = free_port()
    spec_path = workdir / f"{spec['name']}.json"
    spec_path.write_text(json.dumps(spec))
    log = workdir / f"{spec['name']}.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen([str(python), "-m", "hydro_serving.runtime", "--spec", str(spec_path), "--port",
                                 str(port)], stdout=handle, stderr=subprocess.STDOUT,
                                env=base_env(workdir / "home"), start_new_session=True)
    return Proc(proc, port, log, time.monotonic())


def function_dir(root: Path, name: str, requirement: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(HANDLER)
    (folder / "requirements.txt").write_text(requirement + "\n")
    return folder


def test_two_functions_with_different_versions_side_by_side(tmp_path: Path) -> None:
    venvs = tmp_path / "venvs"
    template = get_template("python3")
    procs = []
    try:
        for version in VERSIONS:
            folder = function_dir(tmp_path, f"six-{version.replace('.', '')}", f"six=={version}")
            python = ensure_function_venv(template, folder, base_dir=venvs)
            spec = {"name": folder.name, "lang": "python3", "handler": str(folder)}
            proc = start_in_venv(python, spec, tmp_path)
            procs.append((version, proc))
        for version, proc in procs:
            proc.wait_ready()
            reply = post(proc.port, "/", {})
            assert reply.status == 200, reply.body
            assert reply.json["six"] == version
            assert str(venvs) in reply.json["file"]  # from the function's venv, not the machine's
    finally:
        for _, proc in procs:
            proc.stop()


def test_a_venv_is_built_once_and_reused(tmp_path: Path) -> None:
    folder = function_dir(tmp_path, "fn", "six==1.16.0")
    template = get_template("python3")
    pythons: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            pythons.append(ensure_function_venv(template, folder, base_dir=tmp_path / "venvs"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]  # two replicas starting at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(pythons)) == 1
    venvs = [p for p in (tmp_path / "venvs").iterdir() if not p.name.startswith(".")]
    assert len(venvs) == 1
    marker = json.loads((venvs[0] / "hydro-venv.json").read_text())
    assert ensure_function_venv(template, folder, base_dir=tmp_path / "venvs") == pythons[0]
    assert json.loads((venvs[0] / "hydro-venv.json").read_text())["created"] == marker["created"]  # not rebuilt
    (folder / "requirements.txt").write_text("six==1.15.0\n")
    assert ensure_function_venv(template, folder, base_dir=tmp_path / "venvs") != pythons[0]  # new requirements


def test_a_pip_failure_names_the_requirement_and_its_file(tmp_path: Path) -> None:
    folder = function_dir(tmp_path, "broken", "six==0.0.424242")
    with pytest.raises(ConfigError) as caught:
        ensure_function_venv(get_template("python3"), folder, base_dir=tmp_path / "venvs")
    assert "six==0.0.424242" in caught.value.message
    assert caught.value.field == str(folder / "requirements.txt")
    assert not [p for p in (tmp_path / "venvs").iterdir() if not p.name.startswith(".")]  # nothing half-built


def test_isolation_is_asked_for_with_hydro_isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRO_ISOLATE", raising=False)
    assert isolation_mode({}) is None
    assert isolation_mode({"HYDRO_ISOLATE": "1"}) == "layered"
    assert isolation_mode({}, {"HYDRO_ISOLATE": "full"}) == "full"
    assert isolation_mode({"HYDRO_ISOLATE": "0"}, {"HYDRO_ISOLATE": "1"}) is None  # the function's own wins
    with pytest.raises(ConfigError) as caught:
        isolation_mode({"HYDRO_ISOLATE": "maybe"})
    assert caught.value.field == "HYDRO_ISOLATE"
    folder = function_dir(tmp_path, "fn", "six==1.16.0")
    spec: Any = FunctionSpec(name="fn", lang="python3", handler=str(folder))
    assert replica_python(spec, base_dir=tmp_path / "venvs") == sys.executable
    isolated: Any = FunctionSpec(name="fn", lang="python3", handler=str(folder), environment={"HYDRO_ISOLATE": "1"})
    assert replica_python(isolated, base_dir=tmp_path / "venvs").startswith(str(tmp_path / "venvs"))


def test_gateway_runs_isolated_functions_side_by_side(gateway: Any, tmp_path: Path) -> None:
    """Through the real gateway and local provider: HYDRO_ISOLATE in a function's environment gives it its own
    venv, so two functions pinning different versions of a library answer with their own versions."""
    for name, version in zip(("six-new", "six-old"), VERSIONS, strict=True):
        folder = function_dir(tmp_path, name, f"six=={version}")
        gateway.deploy({"name": name, "lang": "python3", "handler": str(folder),
                        "environment": {"HYDRO_ISOLATE": "1"}})
    for name, version in zip(("six-new", "six-old"), VERSIONS, strict=True):
        status, _, body = gateway.invoke(name, {}, timeout=300)
        assert status == 200, body
        assert body["six"] == version


def test_gateway_reports_a_broken_isolated_environment(gateway: Any, tmp_path: Path) -> None:
    folder = function_dir(tmp_path, "broken-env", "this-package-does-not-exist-hydro==0.0.1")
    gateway.deploy({"name": "broken-env", "lang": "python3", "handler": str(folder),
                    "environment": {"HYDRO_ISOLATE": "1"}})
    admin = {"Authorization": f"Bearer {gateway.token}"}
    status, _, body = gateway.invoke("broken-env", {}, timeout=300, headers=admin)
    assert status in (502, 503), body
    assert body["function"] == "broken-env"
    assert "this-package-does-not-exist-hydro" in body["error"]  # the operator reads the cause
    status, _, body = gateway.invoke("broken-env", {}, timeout=300)
    assert status in (502, 503) and body["function"] == "broken-env"
    assert "this-package-does-not-exist-hydro" not in body["error"] and body["request_id"] in body["error"]
