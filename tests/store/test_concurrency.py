"""The store loses nothing and breaks nothing: uploads killed at random points, racing alias moves.

Real processes against the directory backend and the real Ceph RGW S3 server (``rgw_s3``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hydro_serving.errors import Conflict, NotFound
from hydro_serving.store import ModelStore, open_store

KILLS = 50
SEED = 1107


@pytest.fixture(params=["dir", pytest.param("rgw", marks=pytest.mark.s3)])
def real_store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh store on a directory or on the real S3 server, exported for child processes too."""
    if request.param == "dir":
        url = f"file://{tmp_path / 'store'}"
    else:
        for key, value in request.getfixturevalue("rgw_s3").items():
            monkeypatch.setenv(key, value)
        for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(var, raising=False)
        url = f"s3://hydro-crash-{uuid.uuid4().hex[:12]}/pfx"
    monkeypatch.setenv("HYDRO_STORE", url)
    monkeypatch.setenv("HYDRO_GATEWAY", "http://127.0.0.1:9")  # no gateway: rm does not wait for one
    return url


def _model_dir(tmp_path: Path) -> Path:
    """Several small files, so a kill lands between files as well as inside one."""
    folder = tmp_path / "model"
    rng = random.Random(SEED)
    for i in range(16):
        path = folder / ("model.onnx" if i == 0 else f"weights/part-{i}.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(32 * 1024))
    return folder


def _upload_argv(url: str, folder: Path) -> list[str]:
    return [sys.executable, "-m", "hydro_serving.cli.main", "model", "--store", url, "upload", str(folder),
            "--name", "m", "--framework", "onnx"]


def _assert_consistent(store: ModelStore, tmp_path: Path) -> tuple[list[int], int]:
    """Every version number used is either complete (every file verified) or invisible and removable."""
    numbers = sorted({int(o.key.split("/")[2]) for o in store.backend.list("models/m/")
                      if o.key.split("/")[2].isdigit()})
    complete, partial = [], 0
    for n in numbers:
        try:
            manifest = store.get_manifest(f"m:{n}")
        except NotFound:  # an unfinished upload is invisible, and its leftovers can be removed
            with contextlib.suppress(NotFound):  # NotFound: nothing but the claim was left
                store.remove("m", n)
            assert not [o.key for o in store.backend.list(f"models/m/{n}/")
                        if not o.key.endswith((".claim", ".removed"))]
            partial += 1
            continue
        store.pull(manifest.ref, tmp_path / "pulled" / str(n))  # ... a visible one has every byte, verified
        complete.append(n)
    return complete, partial


def _next_claim(store: ModelStore) -> str:
    numbers = [int(o.key.split("/")[2]) for o in store.backend.list("models/m/") if o.key.split("/")[2].isdigit()]
    return f"models/m/{max(numbers, default=0) + 1}/.claim"


def _wait_for_claim(store: ModelStore, key: str, proc: subprocess.Popen[bytes]) -> bool:
    """Poll until the upload claimed its version (True) or the process ended (False)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if store.backend.size(key) is not None:
            return True
        time.sleep(0.002)
    return False


def test_uploads_killed_at_random_points_leave_the_store_consistent(real_store_url: str, tmp_path: Path) -> None:
    """Half the kills at a random time after the process starts (imports, claim, files, manifest, exit),
    half at a random time after the upload claimed its version (inside the file and manifest writes)."""
    folder = _model_dir(tmp_path)
    argv = _upload_argv(real_store_url, folder)
    store = open_store(real_store_url)
    whole, phase = [], []
    for _ in range(3):  # how long is a whole upload, and the part after its claim? the median of three
        claim = _next_claim(store)
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        claimed = time.monotonic() if _wait_for_claim(store, claim, proc) else None
        assert proc.wait(120) == 0
        whole.append(time.monotonic() - started)
        phase.append(time.monotonic() - (claimed or started))
    full, upload = sorted(whole)[1], sorted(phase)[1]
    rng = random.Random(SEED)
    finished = 0
    for i in range(KILLS):
        claim = _next_claim(store)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if i % 2:
            _wait_for_claim(store, claim, proc)
            time.sleep(rng.uniform(0, 1.1) * upload)
        else:
            time.sleep(rng.uniform(0, 1.1) * full)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            finished += 1
        proc.wait(30)

    complete, partial = _assert_consistent(store, tmp_path)
    assert complete[:3] == [1, 2, 3] and len(complete) >= finished + 3, (complete, finished)
    assert partial >= 3, (complete, partial, full, upload)  # kills did land inside uploads
    assert store.get_manifest("m").version == complete[-1]  # latest works
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)  # and uploads go on
    assert store.get_manifest("m").ref == out.stdout.strip()
    if real_store_url.startswith("file://"):  # no half-written manifest was ever published
        for manifest in Path(real_store_url[len("file://"):]).rglob("manifest.json"):
            json.loads(manifest.read_bytes())


WORKER = r"""
import random, sys, time
from hydro_serving.errors import Conflict, NotFound
from hydro_serving.store import open_store

url, role, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(url)
rng = random.Random(seed)
done = 0
if role == "mover":
    for _ in range(100):
        try:
            store.set_alias("m", rng.randint(1, 6), "production")
            done += 1
        except NotFound:
            pass  # that version was removed meanwhile
else:
    for version in range(2, 7):
        for _ in range(200):
            try:
                store.remove("m", version)
                done += 1
                break
            except Conflict:
                time.sleep(0.005)  # aliased right now: try again
print(done)
"""


def test_two_processes_moving_one_alias_and_a_remover_leave_it_on_a_version_that_exists(
        real_store_url: str, tmp_path: Path, iris_model_file: Path) -> None:
    store = open_store(real_store_url)
    for _ in range(6):
        store.upload(iris_model_file, "m")
    store.set_alias("m", 1, "production")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(worker), real_store_url, role, str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role, seed in (("mover", 1), ("mover", 2), ("remover", 3))]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results.append(int(out.strip()))
    assert results[0] > 0 and results[1] > 0  # both movers did move it
    target = store.get_manifest("m:production")  # resolves, and the manifest is there and valid
    assert target.version in store.versions("m")
    assert store.aliases("m") == {"production": target.version}
    removed = set(range(2, 7)) - set(store.versions("m"))
    assert len(removed) == results[2] and target.version not in removed
    with pytest.raises(Conflict, match="aliased as production"):
        store.remove("m", target.version)  # still protected by its alias


def test_a_removal_that_lands_between_an_alias_check_and_its_write_is_undone(real_store_url: str,
                                                                            iris_model_file: Path) -> None:
    """The race above, made deterministic: a removal runs inside the alias move's compare-and-swap window."""
    store = open_store(real_store_url)
    for _ in range(2):
        store.upload(iris_model_file, "m")
    store.set_alias("m", 1, "production")
    remover = open_store(real_store_url)  # another client
    write_if = store.backend.write_if
    raced = []

    def write_after_a_removal(key: str, data: bytes, tag: str | None) -> bool:
        if not raced:
            raced.append(key)
            remover.remove("m", 2)  # sees no alias on m:2 (the move has not written yet) and removes it
        return write_if(key, data, tag)

    store.backend.write_if = write_after_a_removal  # type: ignore[method-assign]
    with pytest.raises(NotFound, match="removed while the alias was being set"):
        store.set_alias("m", 2, "production")
    assert raced and store.versions("m") == [1]
    assert store.get_manifest("m:production").version == 1  # the move was undone: the alias is on m:1 again


def test_compare_and_swap_refuses_a_stale_tag(real_store_url: str) -> None:
    backend = open_store(real_store_url).backend
    assert backend.write_if("models/x/.aliases/a.json", b'{"version": 1}', None)
    assert not backend.write_if("models/x/.aliases/a.json", b'{"version": 9}', None)  # exists already
    _, first = backend.read_tagged("models/x/.aliases/a.json")
    assert backend.write_if("models/x/.aliases/a.json", b'{"version": 2}', first)
    assert not backend.write_if("models/x/.aliases/a.json", b'{"version": 3}', first)  # stale: lost the race
    assert backend.read("models/x/.aliases/a.json") == b'{"version": 2}'
    assert not backend.write_if("models/x/.aliases/missing.json", b"{}", first)
