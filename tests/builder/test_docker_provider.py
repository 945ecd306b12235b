"""The Docker provider under a real gateway (``hydro gateway --provider docker``) and a real engine (podman's API).

One image is built per module from the sklearn template with a tiny real model; every container the
gateway starts carries its ``hydro.gateway`` label and is removed by label at teardown, whatever happened.
The scale-to-zero, draining and crash logic exercised here is the scaler's, shared with the local provider.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.gateway.providers.docker import LABEL_FUNCTION, LABEL_GATEWAY, container_resources, gateway_label
from hydro_serving.stack import FunctionSpec

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 180.0) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status, hdrs, raw = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        status, hdrs, raw = err.code, dict(err.headers.items()), err.read()
    try:
        return status, hdrs, json.loads(raw) if raw else None
    except ValueError:
        return status, hdrs, raw.decode(errors="replace")


def wait_for(predicate: Any, what: str, limit: float = 120.0) -> None:
    """Poll until ``predicate()`` holds; the bound only stops a hung test, it asserts nothing about speed."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---- unit: limits become docker resources (no engine needed) -----------------------------------------------


def test_limits_map_to_docker_resources_and_bad_ones_name_the_field() -> None:
    spec = FunctionSpec(name="f", lang="sklearn", limits={"memory": "256Mi", "cpu": "500m"})
    assert container_resources(spec) == {"mem_limit": 256 * 1024**2, "nano_cpus": 500_000_000}
    assert container_resources(FunctionSpec(name="f", lang="x", limits={"cpu": "2"})) == {"nano_cpus": 2_000_000_000}
    from hydro_serving.errors import ValidationError

    with pytest.raises(ValidationError) as err:
        container_resources(FunctionSpec(name="f", lang="x", limits={"memory": "lots"}))
    assert err.value.field == "limits.memory" and err.value.function == "f"
    with pytest.raises(ValidationError) as err:
        container_resources(FunctionSpec(name="f", lang="x", limits={"cpu": "-1"}))
    assert err.value.field == "limits.cpu"


# ---- the real thing ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_image(docker_engine: dict[str, str], hydro_base_image: str, iris_model_file: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sklearn function image for the whole module (a build installs scikit-learn: minutes)."""
    import docker

    project = tmp_path_factory.mktemp("dp-proj")
    (project / "model.joblib").write_bytes(iris_model_file.read_bytes())
    image = f"hydro-test/dp-iris:{uuid.uuid4().hex[:8]}"
    (project / "stack.yml").write_text("version: 1.0\nprovider:\n  name: hydro\nfunctions:\n"
                                       f"  iris:\n    lang: sklearn\n    model: ./model.joblib\n    image: {image}\n")
    env = {**os.environ, **docker_engine, "HYDRO_BASE_IMAGE": hydro_base_image}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", "build", "--network", "host"], cwd=project,
                         capture_output=True, text=True, timeout=1200, check=False, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"\nimage {image} built in {time.monotonic() - started:.1f}s")
    yield image
    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=120)
    try:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image, force=True)
    finally:
        client.close()


class DockerGateway:
    """``hydro gateway --provider docker`` as a subprocess on a free port, with a few API helpers."""

    def __init__(self, state_dir: Path, docker_host: str) -> None:
        self.state_dir = state_dir.resolve()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.label = f"{LABEL_GATEWAY}={gateway_label(self.state_dir)}"
        self.log_path = state_dir.parent / "gateway.log"
        self.env = {**os.environ, "DOCKER_HOST": docker_host, "HYDRO_DOCKER_NETWORK": "host"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "hydro_serving.cli.main", "gateway", "--provider", "docker",
                "--port", str(self.port), "--state", str(self.state_dir), "--cold-start-timeout", "120"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited: {self.log()[-3000:]}")
            with contextlib.suppress(OSError):
                return http("GET", self.url + "/healthz", timeout=1)[0] == 200
            return False

        wait_for(up, "the gateway to answer", 30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        token = json.loads((self.state_dir / "credentials.json").read_text())["token"]
        status, _, out = http(method, self.url + path, body, {"Authorization": f"Bearer {token}"})
        return status, out

    def log_lines(self, name: str, tail: int) -> list[str]:
        """``GET /system/logs`` (NDJSON) as text lines."""
        token = json.loads((self.state_dir / "credentials.json").read_text())["token"]
        req = urllib.request.Request(f"{self.url}/system/logs?name={name}&tail={tail}",
                                     headers={"Authorization": f"Bearer {token}"})
        with _OPENER.open(req, timeout=30) as resp:
            return [json.loads(line)["text"] for line in resp.read().decode().splitlines() if line.strip()]

    def invoke(self, name: str, payload: Any) -> tuple[int, dict[str, str], Any]:
        return http("POST", f"{self.url}/function/{name}", payload)


@pytest.fixture(scope="module")
def docker_gateway(docker_engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerGateway]:
    import docker

    gw = DockerGateway(tmp_path_factory.mktemp("dp-gw") / "state", docker_engine["DOCKER_HOST"])
    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=120)
    gw.client = client  # type: ignore[attr-defined]
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
        leftovers = client.containers.list(all=True, sparse=True, filters={"label": gw.label})
        for container in leftovers:  # the gateway should have removed them; never leave one behind anyway
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        client.close()
        assert not leftovers, f"the gateway left containers behind: {[c.short_id for c in leftovers]}"


def containers_of(gw: DockerGateway, function: str) -> list[Any]:
    client = gw.client  # type: ignore[attr-defined]
    # sparse: no inspect per container, which would race with the gateway removing one
    return client.containers.list(all=True, sparse=True, filters={"label": [gw.label, f"{LABEL_FUNCTION}={function}"]})


@pytest.mark.docker
def test_missing_image_is_a_4xx_naming_function_and_image(docker_gateway: DockerGateway) -> None:
    image = f"hydro-test/never-built:{uuid.uuid4().hex[:8]}"
    status, body = docker_gateway.admin("POST", "/system/functions", {
        "service": "ghost", "hydro": {"name": "ghost", "lang": "sklearn", "image": image}})
    assert status == 400, body
    assert body["code"] == "image_not_found" and body["function"] == "ghost" and body["field"] == "image"
    assert image in body["error"] and "hydro build" in body["error"]


@pytest.mark.docker
def test_scales_from_zero_back_to_zero_and_survives_a_killed_container(docker_gateway: DockerGateway,
                                                                        iris_image: str,
                                                                        iris_model_file: Path) -> None:
    import joblib
    from sklearn.datasets import load_iris

    gw = docker_gateway
    x, _ = load_iris(return_X_y=True)
    rows = x[[0, 60, 120]]
    expected = joblib.load(iris_model_file).predict(rows).tolist()
    status, body = gw.admin("POST", "/system/functions", {"service": "iris", "hydro": {
        "name": "iris", "lang": "sklearn", "image": iris_image,
        "scale": {"min": 0, "max": 1, "idle": "2s", "concurrency": 8}}})
    assert status == 202, body
    assert containers_of(gw, "iris") == []  # deployed at zero

    # from zero: the request is held while a container starts and loads the model
    started = time.monotonic()
    status, headers, body = gw.invoke("iris", rows.tolist())
    cold = time.monotonic() - started
    assert status == 200, (body, gw.log()[-3000:])
    assert headers["X-Cold-Start"] == "true"
    assert (body["predictions"] if isinstance(body, dict) else body) == expected
    print(f"\ncold start through the Docker provider: {cold:.2f}s (gateway queue time "
          f"{headers.get('X-Queue-Time-Ms')} ms)")
    first = containers_of(gw, "iris")
    assert len(first) == 1 and first[0].attrs["Labels"]["hydro.replica"].startswith("iris-")

    status, headers, body = gw.invoke("iris", rows.tolist())
    assert status == 200 and headers["X-Cold-Start"] == "false"

    # idle for scale.idle: drained, stopped, and the container is gone
    wait_for(lambda: containers_of(gw, "iris") == [], "scale to zero to remove the container")
    status, info = gw.admin("GET", "/system/function/iris")
    assert status == 200 and info["replicas"] == 0

    # the log outlives the container
    text = "\n".join(gw.log_lines("iris", 200))
    assert f"starting in container {first[0].short_id}" in text
    assert "function 'iris': ready in" in text  # the runtime's own output, streamed from the container
    print("last log lines of the first container:\n" + text[-800:])

    # from zero again: a fresh container
    status, headers, _ = gw.invoke("iris", rows.tolist())
    assert status == 200 and headers["X-Cold-Start"] == "true"
    (second,) = containers_of(gw, "iris")
    assert second.id != first[0].id

    # a request in flight when the container is killed gets a 502 naming the function
    # SIGSTOP every process but PID 1 (the runtime's workers): the kernel still accepts the connection, nobody
    # answers, so the request stays in flight until the container is killed (docker kill = SIGKILL to PID 1,
    # which takes the whole PID namespace with it)
    frozen = second.exec_run(["python3", "-c", "import os, signal; os.kill(-1, signal.SIGSTOP)"])
    assert frozen.exit_code == 0, frozen.output
    result: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: result.update(zip(("status", "headers", "body"),
                                                               gw.invoke("iris", rows.tolist()), strict=True)))
    caller.start()

    def in_flight() -> bool:
        _, info = gw.admin("GET", "/system/function/iris")
        return any(i["inflight"] > 0 for i in info["status"]["instances"])

    wait_for(in_flight, "the request to be in flight")
    second.kill()
    caller.join(120)
    assert result["status"] == 502, result
    assert result["body"]["code"] == "bad_gateway" and result["body"]["function"] == "iris"

    # the crash was noticed: the dead container is removed and the next request starts a fresh one
    wait_for(lambda: all(c.id != second.id for c in containers_of(gw, "iris")), "the killed container's removal")
    status, headers, body = gw.invoke("iris", rows.tolist())
    assert status == 200 and headers["X-Cold-Start"] == "true", body
    (third,) = containers_of(gw, "iris")
    assert third.id not in (first[0].id, second.id)
    assert "exited unexpectedly" in gw.log()

    status, body = gw.admin("DELETE", "/system/function/iris")
    assert status == 202, body
    wait_for(lambda: containers_of(gw, "iris") == [], "removal to stop the last container")


@pytest.mark.docker
def test_published_port_mode_passes_store_settings_and_serves_on_loopback(
        docker_engine: dict[str, str], iris_image: str, iris_model_file: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The mode for Docker Desktop and bridge networks: port published on 127.0.0.1, loopback URLs aliased."""
    import asyncio

    import docker
    import joblib
    from sklearn.datasets import load_iris

    from hydro_serving.gateway.config import GatewayConfig
    from hydro_serving.gateway.providers.docker import DockerProvider

    monkeypatch.setenv("DOCKER_HOST", docker_engine["DOCKER_HOST"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("HYDRO_STORE", "s3://models")
    config = GatewayConfig(state_dir=tmp_path / "state", port=18080)
    # a store model in the gateway's spec (the image serves the model baked into it): the store settings are passed
    spec = FunctionSpec(name="iris", lang="sklearn", image=iris_image, model="iris:1", environment={"GREETING": "hi"})
    x, _ = load_iris(return_X_y=True)
    expected = joblib.load(iris_model_file).predict(x[:2]).tolist()

    async def scenario() -> tuple[dict[str, str], int, Any, list[str]]:
        provider = DockerProvider(config, network="bridge")
        try:
            await provider.deploy(spec, 1)
            replica = await provider.start_replica(spec, 1)
            container = provider._engine().containers.get(replica.info["container"])
            env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
            ready = False
            while not ready and provider.is_alive(replica):
                with contextlib.suppress(OSError):
                    ready = http("GET", replica.endpoint + "/_/ready", timeout=2)[0] == 200
                await asyncio.sleep(0.2)
            assert ready, provider.exit_cause(replica)
            status, _, body = await asyncio.to_thread(http, "POST", replica.endpoint + "/", x[:2].tolist())
            await provider.stop_replica(replica, 5)
            lines = [line async for line in provider.logs("iris", tail=50)]
            return env, status, body, lines
        finally:
            await provider.close()

    try:
        env, status, body, lines = asyncio.run(scenario())
    finally:
        client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=60)
        label = f"{LABEL_GATEWAY}={gateway_label(config.state_dir)}"
        leftovers = client.containers.list(all=True, sparse=True, filters={"label": label})
        for container in leftovers:
            container.remove(force=True)
        client.close()
    assert not leftovers
    assert status == 200 and (body["predictions"] if isinstance(body, dict) else body) == expected
    assert env["HYDRO_PORT"] == "8080" and env["HYDRO_HOST"] == "0.0.0.0"
    assert env["AWS_ENDPOINT_URL"] == "http://host.docker.internal:9000"
    assert env["HYDRO_GATEWAY_URL"] == "http://host.docker.internal:18080"
    assert env["HYDRO_STORE"] == "s3://models" and env["GREETING"] == "hi"
    # the gateway's own credentials never reach a container (read-only ones are HYDRO_REPLICA_AWS_*)
    assert "AWS_ACCESS_KEY_ID" not in env
    assert any("Shutting down" in line for line in lines)  # stopped gracefully (SIGTERM), and its log kept
