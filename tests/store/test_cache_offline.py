"""fetch_model with the S3 server gone: pinned versions come from the cache, aliases from the last resolution."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from hydro_serving.errors import StoreError
from hydro_serving.store import fetch_model, open_store
from tests.conftest import free_port


@pytest.fixture
def own_moto(monkeypatch: pytest.MonkeyPatch):
    """A moto S3 server for this test alone, so the test can stop it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    state = {"running": True}

    def stop() -> None:
        if state["running"]:
            server.stop()
            state["running"] = False

    yield stop
    stop()


def test_cache_hit_with_server_stopped(own_moto, iris_model_file: Path, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    url = "s3://offline-cache/models-here"
    store = open_store(url)
    store.upload(iris_model_file, "iris")
    store.upload(iris_model_file, "iris")
    store.set_alias("iris", 1, "production")
    cache = tmp_path / "cache"
    want = hashlib.sha256(iris_model_file.read_bytes()).hexdigest()

    pinned = fetch_model("iris:1", url, cache)
    assert fetch_model("iris:production", url, cache) == pinned  # remembers production -> 1

    own_moto()  # the S3 server is gone from here on

    again = fetch_model("iris:1", url, cache)
    assert again == pinned
    assert hashlib.sha256((again / iris_model_file.name).read_bytes()).hexdigest() == want

    with caplog.at_level(logging.WARNING, logger="hydro_serving.store.cache"):
        assert fetch_model("iris:production", url, cache) == pinned
    assert "store unreachable" in caplog.text

    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        fetch_model("iris:2", url, cache)  # never cached: needs the store
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        fetch_model("iris:staging", url, cache)  # never resolved before: nothing to fall back on


def test_two_processes_fetch_at_once(iris_model_file: Path, tmp_path: Path) -> None:
    """Two real processes fetch the same version into one cache: both get an intact tree."""
    import subprocess
    import sys

    store_url = f"file://{tmp_path / 'store'}"
    open_store(store_url).upload(iris_model_file, "shared")
    cache = tmp_path / "cache"
    code = ("import sys; from pathlib import Path; from hydro_serving.store import fetch_model; "
            "print(fetch_model('shared:1', sys.argv[1], Path(sys.argv[2])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url, str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outs.append(out.strip())
    assert outs[0] == outs[1]
    tree = Path(outs[0])
    assert (tree / iris_model_file.name).read_bytes() == iris_model_file.read_bytes()
    assert not list((cache / "tmp").iterdir())  # no leftovers from the loser of any race
