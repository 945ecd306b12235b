"""Real images through a real Docker Engine API (podman's), run and invoked; pushed to a real registry.

Slow (pip installs the runtime and scikit-learn inside the build): few tests, marked ``docker``.
Nothing is mocked: the engine, the base image, the registry and the model are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.builder.images import image_reference

pytestmark = pytest.mark.docker


def hydro(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1200, check=False, env={**os.environ, **env})


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def healthcheck_command(dockerfile: Path) -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK (podman's compat API does not report it)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK"))
    return json.loads(line[line.index("CMD") + 3:].strip())


def wait_ready(url: str, container: Any, limit: float = 180.0) -> None:
    """Poll /_/ready (bounded); fail with the container's log if it exits or never gets ready."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        container.reload()
        if container.status in ("exited", "dead"):
            break
        time.sleep(0.5)
    pytest.fail(f"container never became ready; log:\n{container.logs().decode()[-3000:]}")


def test_failed_build_exits_non_zero_naming_the_step(tmp_path: Path, docker_engine: dict[str, str],
                                                     hydro_base_image: str) -> None:
    env = {**docker_engine, "HYDRO_BASE_IMAGE": hydro_base_image}
    assert hydro("new", "broken", "--lang", "python3", cwd=tmp_path, env=env).returncode == 0
    # '--no-index' in the function's requirements makes pip unable to install anything: a real, fast failure
    (tmp_path / "broken" / "requirements.txt").write_text("--no-index\n")
    out = hydro("build", "--network", "host", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert "building broken failed at STEP" in out.stderr and "RUN pip install" in out.stderr
    assert "No matching distribution" in out.stdout  # the engine's output was streamed to the terminal
    assert "Traceback" not in out.stderr


def test_sklearn_image_builds_pushes_runs_and_predicts(tmp_path: Path, docker_engine: dict[str, str],
                                                       hydro_base_image: str, local_registry: str,
                                                       iris_model_file: Path, port: int) -> None:
    import docker
    import joblib
    from sklearn.datasets import load_iris

    project = tmp_path / "proj"
    project.mkdir()
    (project / "model.joblib").write_bytes(iris_model_file.read_bytes())
    image = f"{local_registry}/hydro-test/iris:{uuid.uuid4().hex[:8]}"
    (project / "stack.yml").write_text(
        "version: 1.0\nprovider:\n  name: hydro\nfunctions:\n"
        f"  iris:\n    lang: sklearn\n    model: ./model.joblib\n    image: {image}\n")
    env = {**docker_engine, "HYDRO_BASE_IMAGE": hydro_base_image}
    out = hydro("build", "--network", "host", "--push", cwd=project, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"==> built {image}" in out.stdout and f"==> pushed {image}" in out.stdout

    repo, tag = image_reference(image)
    with urllib.request.urlopen(f"http://{local_registry}/v2/{repo.split('/', 1)[1]}/tags/list", timeout=10) as r:
        assert tag in json.loads(r.read())["tags"]

    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=120)
    container = client.containers.run(image, detach=True, network_mode="host",
                                      environment={"HYDRO_PORT": str(port)})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/_/ready", container)
        container.reload()
        x, _ = load_iris(return_X_y=True)
        rows = x[[0, 60, 120]]
        expected = joblib.load(iris_model_file).predict(rows).tolist()

        status, body = http("POST", f"{base}/v2/models/iris/infer", {
            "id": "req-1",
            "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": rows.ravel().tolist()}]})
        assert status == 200, body
        assert body["id"] == "req-1" and body["outputs"][0]["data"] == expected

        status, body = http("POST", f"{base}/", rows.tolist())
        assert status == 200, body
        predictions = body["predictions"] if isinstance(body, dict) else body
        assert predictions == expected

        status, body = http("POST", f"{base}/", [[1.0, 2.0]])  # wrong number of features: the caller's error
        assert status == 400 and "error" in body

        # the image runs as the unprivileged user, and its HEALTHCHECK command passes once ready
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        check = container.exec_run(healthcheck_command(project / "build" / "iris" / "Dockerfile"))
        assert check.exit_code == 0, check.output
    finally:
        container.remove(force=True)
        try:
            client.images.remove(image, force=True)
        finally:
            client.close()
