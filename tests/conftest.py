"""Fixtures shared by every test: real servers on 127.0.0.1, tiny real models, isolated state.

Each part's tests live in ``tests/<part>/`` with their own conftest for part-specific fixtures.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["tests.gateway_fixtures"]  # gateway, gateway_factory, shared_gateway, echo_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_TOOLS = Path(os.environ.get("HYDRO_SHARED_TOOLS", REPO.parent / "shared" / "tools"))


# Tests that start real processes (a runtime server, a gateway, the hydro CLI or another interpreter)
# take seconds each. They get the ``process`` marker here so the quick loop
# (``-m "not process and not slow and not docker and not heavy and not s3"``: unit and in-process tests)
# leaves them out: every test that uses a real-gateway fixture of tests/gateway_fixtures.py, and every
# test of the modules below, which start their processes themselves. A new module that starts processes
# without those fixtures adds itself here (or sets ``pytestmark = pytest.mark.process``).
PROCESS_FIXTURES = frozenset({"gateway", "gateway_factory", "shared_gateway"})
PROCESS_MODULES = frozenset({
    "tests/builder/test_cli.py",
    "tests/coldstart/test_zygote.py",
    "tests/gateway/test_api.py",
    "tests/gateway/test_cli.py",
    "tests/gateway/test_discovery.py",
    "tests/gateway/test_secrets.py",
    "tests/router/test_router_runtime.py",
    "tests/runtime/test_batching.py",
    "tests/runtime/test_handler_lifecycle.py",
    "tests/runtime/test_onnx.py",
    "tests/runtime/test_python3.py",
    "tests/runtime/test_sklearn.py",
    "tests/store/test_cache_offline.py",
    "tests/store/test_cli.py",
    "tests/store/test_concurrency.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that start real processes ``process`` (a renamed module must not slip out)."""
    missing = sorted(m for m in PROCESS_MODULES if not (REPO / m).is_file())
    if missing:
        raise pytest.UsageError(f"tests/conftest.py PROCESS_MODULES names missing files: {', '.join(missing)}")
    for item in items:
        try:
            module = item.path.relative_to(REPO).as_posix()
        except ValueError:
            module = ""
        if module in PROCESS_MODULES or not PROCESS_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)


def unavailable(reason: str) -> None:
    """A real server or file a test needs is missing: skip on a developer's machine, FAIL in CI.

    CI (``CI=true``) installs and starts everything in .ci/run, so something missing there is a broken
    set-up that must not pass as a skip.
    """
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(autouse=True)
def _isolated_hydro_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the user's real store, cache, gateway state and credentials."""
    home = tmp_path_factory.mktemp("hydro-home")
    monkeypatch.setenv("HYDRO_HOME", str(home))
    monkeypatch.setenv("HYDRO_STORE", f"file://{home / 'store'}")
    monkeypatch.setenv("HYDRO_CACHE", str(home / "cache"))
    monkeypatch.setenv("HYDRO_STATE", str(home / "state"))
    for var in ("HYDRO_TOKEN", "HYDRO_GATEWAY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def iris_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LogisticRegression trained on iris, saved with joblib."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path_factory.mktemp("iris") / "model.joblib"
    joblib.dump(model, path)
    return path


@pytest.fixture(scope="session")
def moto_s3() -> dict[str, str]:
    """A real (in-memory) S3 HTTP server on 127.0.0.1: moto's ThreadedMotoServer."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    yield env
    server.stop()


@pytest.fixture(scope="session")
def rgw_s3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real Ceph RADOS Gateway started with shared/tools/s3-up.sh (root and the tools needed).

    Reused when HYDRO_TEST_S3_ENDPOINT points at one already running (CI starts it once).
    """
    if os.environ.get("HYDRO_TEST_S3_ENDPOINT"):
        yield {
            "AWS_ENDPOINT_URL": os.environ["HYDRO_TEST_S3_ENDPOINT"],
            "AWS_ACCESS_KEY_ID": "hydro",
            "AWS_SECRET_ACCESS_KEY": "hydro-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        return
    script = SHARED_TOOLS / "s3-up.sh"
    if not script.exists() or os.geteuid() != 0:
        unavailable(f"the real S3 server needs {script} and root; CI has both")
    data = tmp_path_factory.mktemp("rgw")
    port, mon_port = free_port(), free_port()
    out = subprocess.run(["bash", str(script), str(data), str(port), str(mon_port)],
                         capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        pytest.fail(f"s3-up.sh failed: {out.stderr[-2000:]}")
    env = {}
    for token in out.stdout.strip().split("export", 1)[-1].split():
        key, _, value = token.partition("=")
        env[key] = value
    yield env
    subprocess.run(["bash", str(SHARED_TOOLS / "s3-down.sh"), str(data)], check=False, timeout=60)
    shutil.rmtree(data, ignore_errors=True)
