"""A pinned version the gateway has cached starts new containers with the store stopped (issue 14 point 1, docker).

Real pieces: a private Ceph RGW (stopped mid-test; never the shared one), a real sklearn function
image that references the model in the store (``model: iris:1``, nothing baked), podman's Docker
API and the real :class:`DockerProvider`. The container is given no store credentials at all: with
the store down, the only way it can serve is the read-only copy of the gateway's cache entry that
the provider mounts. The attacker's view: the container sees that one version and nothing else of
the gateway's cache (not another model, not the blobs), and a function cannot point the seed elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.gateway.providers.docker import LABEL_GATEWAY, SEED_DIR, gateway_label
from hydro_serving.stack import FunctionSpec
from tests.builder.test_docker_provider import http
from tests.conftest import free_port
from tests.gateway.test_store_offline import private_rgw  # noqa: F401 - the fixture

pytestmark = [pytest.mark.docker, pytest.mark.s3, pytest.mark.slow]

LISTING = """
import json, os, sys
seen = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs]
print(json.dumps({"seen": seen, "exists": [p for p in sys.argv[2:] if os.path.exists(p)]}))
"""


@pytest.fixture
def store_image(docker_engine: dict[str, str], hydro_base_image: str, tmp_path: Path) -> Iterator[str]:
    """A function image whose model is a store reference (the runtime fetches it when it starts)."""
    import docker

    image = f"hydro-test/pinned-cache:{uuid.uuid4().hex[:8]}"
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "stack.yml").write_text("version: 1.0\nprovider:\n  name: hydro\nfunctions:\n"
                                                 f"  iris:\n    lang: sklearn\n    model: iris:1\n    image: {image}\n")
    env = {**os.environ, **docker_engine, "HYDRO_BASE_IMAGE": hydro_base_image}
    out = subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", "build", "--network", "host"],
                         cwd=tmp_path / "proj", capture_output=True, text=True, timeout=1500, check=False, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    yield image
    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=120)
    try:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image, force=True)
    finally:
        client.close()


def test_a_cached_pin_starts_a_container_with_the_store_stopped(
        private_rgw: Any, docker_engine: dict[str, str], store_image: str,  # noqa: F811
        iris_model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import docker
    import joblib
    from sklearn.datasets import load_iris

    from hydro_serving.gateway.config import GatewayConfig
    from hydro_serving.gateway.providers.docker import DockerProvider
    from hydro_serving.store import fetch_model, open_store
    from hydro_serving.store.store import pin_model
    from hydro_serving.store.trust import PIN_ANNOTATION, TrustPolicy

    monkeypatch.setenv("DOCKER_HOST", docker_engine["DOCKER_HOST"])
    monkeypatch.setenv("HYDRO_CACHE", str(tmp_path / "gateway-cache"))  # the gateway's cache
    store = open_store()
    store.upload(iris_model_file, "iris")
    store.upload(iris_model_file, "other")
    pin = pin_model("iris:1", TrustPolicy())
    iris_tree = Path(fetch_model("iris:1", policy=TrustPolicy()))  # the gateway has both cached
    other_tree = Path(fetch_model("other:1", policy=TrustPolicy()))
    private_rgw()  # the store is down from here on

    config = GatewayConfig(state_dir=tmp_path / "state", port=free_port())
    spec = FunctionSpec(name="iris", lang="sklearn", image=store_image, model="iris:1",
                        annotations={PIN_ANNOTATION: str(pin)},
                        environment={"HYDRO_CACHE_SEED": str(other_tree.parent.parent.parent)})  # hostile: ignored
    x, _ = load_iris(return_X_y=True)
    expected = joblib.load(iris_model_file).predict(x[:2]).tolist()
    blob_dir = tmp_path / "gateway-cache" / "blobs"

    async def scenario() -> dict[str, Any]:
        provider = DockerProvider(config, network="host")
        try:
            await provider.deploy(spec, 1)
            replica = await provider.start_replica(spec, 1)
            container = provider._engine().containers.get(replica.info["container"])
            ready = False
            while not ready and provider.is_alive(replica):
                with contextlib.suppress(OSError):
                    ready = http("GET", replica.endpoint + "/_/ready", timeout=2)[0] == 200
                await asyncio.sleep(0.3)
            assert ready, provider.exit_cause(replica)
            status, _, body = await asyncio.to_thread(http, "POST", replica.endpoint + "/", x[:2].tolist())
            probe = await asyncio.to_thread(container.exec_run, ["python", "-c", LISTING, SEED_DIR, str(other_tree),
                                                                 str(blob_dir), str(iris_tree)])
            await provider.stop_replica(replica, 5)
            return {"status": status, "body": body, "mounts": container.attrs["Mounts"],
                    "env": dict(item.split("=", 1) for item in container.attrs["Config"]["Env"]),
                    "probe": probe}
        finally:
            await provider.close()

    try:
        out = asyncio.run(scenario())
    finally:
        client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"], timeout=60)
        label = f"{LABEL_GATEWAY}={gateway_label(config.state_dir)}"
        for container in client.containers.list(all=True, sparse=True, filters={"label": label}):
            container.remove(force=True)
        client.close()
    assert out["status"] == 200, out["body"]
    body = out["body"]
    assert (body["predictions"] if isinstance(body, dict) else body) == expected
    # the container holds no store credential: only the mounted entry could have served it
    assert not any(k.startswith("AWS_") and "KEY" in k for k in out["env"]), out["env"]
    assert out["env"]["HYDRO_CACHE_SEED"] == SEED_DIR  # the function's own value never reaches it
    # exactly the pinned version's folder and state file, read-only
    sources = sorted(m["Source"] for m in out["mounts"])
    assert sources == sorted([str(iris_tree), f"{iris_tree}.state.json"]), out["mounts"]
    assert all(m.get("RW") is False or m.get("Mode") == "ro" for m in out["mounts"]), out["mounts"]
    code, raw = out["probe"]
    assert code == 0, raw
    seen = json.loads(raw.decode().strip().splitlines()[-1])
    names = sorted(Path(p).name for p in seen["seen"])
    assert names == sorted(["1.state.json", *(f.name for f in iris_tree.iterdir())]), seen
    assert all("/other/" not in p for p in seen["seen"]), seen
    assert seen["exists"] == [], seen  # the gateway's cache (other models, blobs, the tree's host path) is not there
