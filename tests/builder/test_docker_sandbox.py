"""A hostile function on the Docker provider (podman's API): only its declared secrets, an explicit environment.

A real image built by ``hydro build`` from a python3 function that tries to read the gateway's
files and another function's secret and lists its environment; the provider runs in-process (as
the published-port test does) on a gateway state directory holding both functions' secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.providers.docker import LABEL_GATEWAY, DockerProvider, gateway_label
from hydro_serving.gateway.secrets import write_secret
from hydro_serving.stack import FunctionSpec

HOSTILE = '''
import os


def attempt(action):
    try:
        return {"ok": True, "got": action()}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}


def read(path):
    with open(path, "rb") as fh:
        return fh.read().decode(errors="replace")


def handle(payload, context):
    results = {name: attempt(lambda p=path: read(p)) for name, path in payload["read"].items()}
    folder = os.environ.get("HYDRO_SECRETS_DIR", "")
    return {"results": results, "environ": dict(os.environ), "uid": os.getuid(),
            "secrets": attempt(lambda: sorted(os.listdir(folder))),
            "mine": attempt(lambda: read(os.path.join(folder, "mine")))}
'''

GATEWAY_SECRETS = {"AWS_SECRET_ACCESS_KEY": "gateway-aws-secret-value", "AWS_ACCESS_KEY_ID": "gateway-aws-key-id",
                   "HYDRO_TOKEN": "gateway-admin-token-value"}


@pytest.fixture(scope="module")
def hostile_image(docker_engine: dict[str, str], hydro_base_image: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import docker

    project = tmp_path_factory.mktemp("hostile-proj")
    (project / "fn").mkdir()
    (project / "fn" / "handler.py").write_text(HOSTILE)
    image = f"hydro-test/hostile:{uuid.uuid4().hex[:8]}"
    (project / "stack.yml").write_text("version: 1.0\nprovider:\n  name: hydro\nfunctions:\n"
                                       f"  hostile:\n    lang: python3\n    handler: ./fn\n    image: {image}\n")
    env = {**os.environ, **docker_engine, "HYDRO_BASE_IMAGE": hydro_base_image}
    out = subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", "build", "--network", "host"], cwd=project,
                         capture_output=True, text=True, timeout=1200, check=False, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    yield image
    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=120)
    try:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image, force=True)
    finally:
        client.close()


def post(url: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as resp:
        return resp.status, json.loads(resp.read())


@pytest.mark.docker
def test_hostile_container_gets_its_secrets_and_declared_environment_only(
        docker_engine: dict[str, str], hostile_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    monkeypatch.setenv("DOCKER_HOST", docker_engine["DOCKER_HOST"])
    for key, value in GATEWAY_SECRETS.items():
        monkeypatch.setenv(key, value)
    config = GatewayConfig(state_dir=tmp_path / "state", port=18081)
    write_secret(config.state_dir, "mine", b"my-own-secret")
    write_secret(config.state_dir, "theirs", b"their-secret-value")
    (config.state_dir / "credentials.json").write_text('{"token": "gateway-admin-token-value"}')
    spec = FunctionSpec(name="hostile", lang="python3", image=hostile_image, secrets=("mine",),
                        environment={"DECLARED": "yes"})
    payload = {"read": {
        "credentials": str(config.state_dir / "credentials.json"),
        "secret store": str(config.state_dir / "secrets" / "theirs"),
        "their secret by name": "/var/openfaas/secrets/theirs",
        "gateway environ": f"/proc/{os.getpid()}/environ",
    }}

    async def scenario() -> tuple[dict[str, Any], list[str]]:
        provider = DockerProvider(config, network="host")
        try:
            provider.check(spec)
            await provider.deploy(spec, 1)
            replica = await provider.start_replica(spec, 1)
            ready = False
            while not ready and provider.is_alive(replica):
                with contextlib.suppress(OSError):
                    req = urllib.request.Request(replica.endpoint + "/_/ready")
                    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=2) as resp:
                        ready = resp.status == 200
                if not ready:
                    await asyncio.sleep(0.2)
            assert ready, provider.exit_cause(replica)
            image_env = provider._engine().images.get(hostile_image).attrs["Config"]["Env"]
            status, body = await asyncio.to_thread(post, replica.endpoint + "/", payload)
            assert status == 200, body
            await provider.stop_replica(replica, 5)
            return body, [item.split("=", 1)[0] for item in image_env]
        finally:
            await provider.close()

    try:
        body, image_keys = asyncio.run(scenario())
    finally:
        client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=60)
        label = f"{LABEL_GATEWAY}={gateway_label(config.state_dir)}"
        for container in client.containers.list(all=True, sparse=True, filters={"label": label}):
            container.remove(force=True)
        client.close()
    leaked = {name: r for name, r in body["results"].items() if r["ok"]}
    assert leaked == {}, leaked
    assert body["secrets"] == {"ok": True, "got": ["mine"]}  # its declared secret, mounted, and nothing else
    assert body["mine"] == {"ok": True, "got": "my-own-secret"}
    env = body["environ"]
    assert env["DECLARED"] == "yes" and env["HYDRO_SECRETS_DIR"] == "/var/openfaas/secrets"
    allowed = set(image_keys) | {"DECLARED", "HYDRO_FUNCTION_NAME", "HYDRO_GATEWAY_URL", "HYDRO_SECRETS_DIR",
                                 "HYDRO_HOST", "HYDRO_PORT", "PYTHONUNBUFFERED",
                                 "HOSTNAME", "HOME", "container", "TERM",  # set by the engine in every container
                                 "SERVER_SOFTWARE",  # set by the runtime's server (gunicorn)
                                 "LC_CTYPE"}  # set by Python itself in a C locale (PEP 538)
    assert set(env) <= allowed, sorted(set(env) - allowed)
    for key, value in GATEWAY_SECRETS.items():
        assert value not in json.dumps(env), key
    assert body["uid"] != 0
