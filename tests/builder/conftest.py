"""Builder fixtures: a private template folder, and (session-wide) a real Docker Engine API, base image and registry.

The engine fixtures are meant for reuse by any part that needs real images (the Docker provider):

* ``docker_engine`` -> ``{"DOCKER_HOST": "unix://..."}``: the engine at ``$DOCKER_HOST`` when it answers,
  else podman's Docker-compatible service started from shared/tools/docker-api-up.sh on a private socket
  (stopped at the end of the session). Skips, saying why, when neither is possible.
* ``hydro_base_image`` -> tag of a local Python base image (``$HYDRO_BASE_IMAGE`` or
  ``localhost/hydro-base:bookworm`` built by shared/tools/base-image.sh): no registry can be pulled from here.
* ``local_registry`` -> ``"127.0.0.1:PORT"``: Debian's docker-registry on loopback, storage in a temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
SHARED_TOOLS = Path(os.environ.get("HYDRO_SHARED_TOOLS", REPO.parent / "shared" / "tools"))
DEFAULT_BASE = "localhost/hydro-base:bookworm"


def engine_unavailable(reason: str) -> None:
    """No Docker Engine API here: skip on a developer's machine, fail in CI (podman is installed there)."""
    unavailable(reason)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- a template folder of our own (the builder must not depend on which templates exist yet) --------------


def write_template(root: Path, name: str, kind: str, *, extra: str | None = None,
                   patterns: tuple[str, ...] = (), requirements: str = "", dockerfile: str | None = None) -> Path:
    """A template folder with a template.yml, a handler module and requirements, like the repo's templates.

    No Dockerfile unless ``dockerfile`` is given (a template's own override): the builder then renders
    the shared one, as it does for every template in the repository.
    """
    folder = root / name
    folder.mkdir(parents=True)
    lines = [f"name: {name}", f"description: test {kind} template", f"kind: {kind}",
             "entrypoint: handler:Handler", "requirements: requirements.txt", "base_image: python:3.11-slim",
             f"model_patterns: {list(patterns)}", f"extra: {extra or 'null'}", "frameworks: []"]
    (folder / "template.yml").write_text("\n".join(lines) + "\n")
    (folder / "handler.py").write_text("class Handler:\n    def load(self, model_dir, context):\n        pass\n")
    (folder / "requirements.txt").write_text(requirements)
    if dockerfile is not None:
        (folder / "Dockerfile").write_text(dockerfile)
    return folder


@pytest.fixture
def builder_templates(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HYDRO_TEMPLATES -> a folder with python3 (function), sklearn (model) and router templates."""
    root = tmp_path_factory.mktemp("templates")
    write_template(root, "python3", "function")
    write_template(root, "sklearn", "model", extra="sklearn", patterns=("*.joblib", "*.pkl"),
                   requirements="scikit-learn>=1.3\n")
    write_template(root, "router", "router")
    monkeypatch.setenv("HYDRO_TEMPLATES", str(root))
    monkeypatch.delenv("HYDRO_BASE_IMAGE", raising=False)
    return root


# ---- real engine, base image, registry (session-wide, slow: used only by @pytest.mark.docker tests) ---------


def _ping(host: str) -> str | None:
    """None when the engine at ``host`` answers, else the reason it does not."""
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=10)
        client.ping()
        client.close()
        return None
    except Exception as exc:  # any failure means "not reachable"; the reason goes into the skip message
        return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    host = os.environ.get("DOCKER_HOST")
    if host:
        reason = _ping(host)
        if reason:
            engine_unavailable(f"DOCKER_HOST={host} is not reachable ({reason})")
        yield {"DOCKER_HOST": host}
        return
    script = SHARED_TOOLS / "docker-api-up.sh"
    if not script.exists() or os.geteuid() != 0:  # the script installs podman itself when it is missing
        engine_unavailable(f"no DOCKER_HOST, and starting podman's API needs {script} and root")
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    out = subprocess.run(["bash", str(script), str(sock)], capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        engine_unavailable(f"docker-api-up.sh failed: {out.stderr.strip()[-500:]}")
    host = f"unix://{sock}"
    pid_file = Path(f"{sock}.pid")
    try:
        reason = _ping(host)
        if reason:
            engine_unavailable(f"podman's API at {host} does not answer ({reason})")
        yield {"DOCKER_HOST": host}
    finally:
        if pid_file.exists():
            pid = int(pid_file.read_text().strip())
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="session")
def hydro_base_image(docker_engine: dict[str, str]) -> str:
    tag = os.environ.get("HYDRO_BASE_IMAGE") or DEFAULT_BASE
    import docker

    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=60)
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()
    script = SHARED_TOOLS / "base-image.sh"
    if not script.exists():
        engine_unavailable(f"base image {tag} is missing and {script} is not there to build it")
    out = subprocess.run(["bash", str(script), tag], capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        pytest.fail(f"base-image.sh failed: {out.stderr[-2000:]}")
    return tag


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory, docker_engine: dict[str, str]) -> str:
    binary = shutil.which("docker-registry")
    if binary is None:
        engine_unavailable("Debian's docker-registry is not installed (apt-get install docker-registry)")
    data = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = data / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}/store\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    log = (data / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"docker-registry exited: {(data / 'registry.log').read_text()[-1000:]}")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
