"""The store suite, run against every backend: a directory, moto's S3 server and Ceph RGW (-m s3)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest

from hydro_serving.contract import Signature
from hydro_serving.errors import Conflict, NotFound, StoreError, ValidationError
from hydro_serving.store import ModelStore, fetch_model, manifest_of, open_store


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_dir(tmp_path: Path, iris_model_file: Path) -> Path:
    """A directory model: the real iris joblib plus a nested file, so layout is checked too."""
    root = tmp_path / "src"
    (root / "extra").mkdir(parents=True)
    (root / "model.joblib").write_bytes(iris_model_file.read_bytes())
    (root / "extra" / "classes.txt").write_text("setosa\nversicolor\nvirginica\n")
    return root


def test_upload_pull_round_trip(store: ModelStore, model_dir: Path, tmp_path: Path) -> None:
    sig = {"inputs": [{"name": "x", "dtype": "float64", "shape": [-1, 4]}],
           "outputs": [{"name": "y", "dtype": "int64", "shape": [-1]}]}
    manifest = store.upload(model_dir, "iris", signature=sig, metadata={"owner": "ds"})
    assert (manifest.name, manifest.version, manifest.framework) == ("iris", 1, "sklearn")
    assert {f.path: f.sha256 for f in manifest.files} == {
        "extra/classes.txt": _sha(model_dir / "extra" / "classes.txt"),
        "model.joblib": _sha(model_dir / "model.joblib"),
    }
    assert store.list_models() == ["iris"]
    assert store.versions("iris") == [1]

    shown = store.get_manifest("iris")
    assert shown.to_dict() == manifest.to_dict()
    assert shown.signature == Signature.from_dict(sig)
    assert {k: v for k, v in shown.metadata.items() if not k.startswith("hydro.")} == {"owner": "ds"}

    dest = store.pull("iris:1", tmp_path / "pulled")
    assert _sha(dest / "model.joblib") == _sha(model_dir / "model.joblib")
    assert (dest / "extra" / "classes.txt").read_text().startswith("setosa")
    model = joblib.load(dest / "model.joblib")  # the pulled bytes are a working model
    assert model.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))[0] == 0


def test_concurrent_uploads_get_distinct_versions(store_url: str, tmp_path: Path) -> None:
    sources = []
    for i in range(8):
        path = tmp_path / f"m{i}" / "model.onnx"
        path.parent.mkdir()
        path.write_bytes(f"model number {i}".encode() * 100)
        sources.append(path)
    barrier = threading.Barrier(8, timeout=60)
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        store = open_store(store_url)  # one client per uploader, like separate processes
        try:
            barrier.wait()
            results[i] = store.upload(sources[i], "race").version
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(results.values()) == list(range(1, 9))
    store = open_store(store_url)
    assert store.versions("race") == list(range(1, 9))
    for i, version in results.items():  # nothing overwritten: each version holds its own upload
        files = store.get_manifest(f"race:{version}").files
        assert files[0].sha256 == _sha(sources[i])


def test_interrupted_upload_is_invisible(store: ModelStore, tmp_path: Path, iris_model_file: Path) -> None:
    src = tmp_path / "two"
    src.mkdir()
    (src / "a.joblib").write_bytes(iris_model_file.read_bytes())
    (src / "b.joblib").write_bytes(iris_model_file.read_bytes() + b"\0")

    def delete_b_while_a_uploads(path: str, _n: int) -> None:
        if path == "a.joblib":  # a real failure mid-upload: the second file vanishes from disk
            (src / "b.joblib").unlink(missing_ok=True)

    with pytest.raises(StoreError, match="disappeared"):
        store.upload(src, "half", progress=delete_b_while_a_uploads)
    with pytest.raises(NotFound):
        store.versions("half")
    assert store.list_models() == []
    with pytest.raises(NotFound):
        store.get_manifest("half:1")
    assert store.discover().incomplete == ["half:1"]

    (src / "b.joblib").write_bytes(b"back")
    manifest = store.upload(src, "half")
    assert manifest.version == 2  # the failed claim is a tombstone: 1 is never reused
    assert store.versions("half") == [2]


def test_aliases(store: ModelStore, iris_model_file: Path, tmp_path: Path) -> None:
    for _ in range(3):
        store.upload(iris_model_file, "m")
    assert store.get_manifest("m").version == 3
    assert store.get_manifest("m:latest").version == 3
    store.set_alias("m", 1, "production")
    store.set_alias("m", 2, "staging")
    assert store.get_manifest("m:production").version == 1
    assert store.aliases("m") == {"production": 1, "staging": 2}
    store.set_alias("m", 3, "production")  # aliases move; versions do not
    assert store.get_manifest("m:production").version == 3

    with pytest.raises(NotFound, match="no alias 'canary'"):
        store.get_manifest("m:canary")
    with pytest.raises(NotFound, match="no version 9"):
        store.set_alias("m", 9, "canary")
    with pytest.raises(ValidationError, match="implicit"):
        store.set_alias("m", 1, "latest")
    with pytest.raises(Conflict, match="production"):
        store.remove("m", 3)
    store.remove("m", 1)
    assert store.versions("m") == [2, 3]
    with pytest.raises(NotFound):
        store.pull("m:1", tmp_path / "gone")
    assert store.upload(iris_model_file, "m").version == 4  # a removed number is not reused


def test_discovery_of_foreign_files(store: ModelStore, put_foreign: Callable[[str, bytes], None],
                                    iris_model_file: Path, tmp_path: Path) -> None:
    store.upload(iris_model_file, "churn")  # churn:1, uploaded normally
    model_bytes = iris_model_file.read_bytes()
    put_foreign("models/churn/model.joblib", model_bytes)
    put_foreign("models/spark-pipe/metadata/part-00000", b'{"class":"org.apache.spark.ml.PipelineModel"}')
    put_foreign("models/spark-pipe/stages/0_lr/metadata/part-00000", b'{"class":"LogisticRegression"}')
    put_foreign("models/notes/readme.md", b"no model here")
    put_foreign("models/Bad Name/model.onnx", b"onnx?")

    safe_only = store.discover()  # pickle is code: not adopted unless the operator opted in
    assert [m.ref for m in safe_only.added] == ["spark-pipe:1"]
    assert "pickle" in {g.name: g.reason for g in safe_only.unservable}["churn"]
    assert store.versions("churn") == [1]

    report = store.discover(allow_unsafe=True)
    added = {m.ref: m for m in report.added}
    assert set(added) == {"churn:2"}
    assert added["churn:2"].origin == "discovery"
    added["spark-pipe:1"] = store.get_manifest("spark-pipe:1")
    assert added["spark-pipe:1"].origin == "discovery"
    assert added["churn:2"].framework == "sklearn"
    assert added["churn:2"].files[0].sha256 == hashlib.sha256(model_bytes).hexdigest()
    assert added["spark-pipe:1"].framework == "spark"
    assert {f.path for f in added["spark-pipe:1"].files} == {"metadata/part-00000", "stages/0_lr/metadata/part-00000"}
    reasons = {g.name: g.reason for g in report.unservable}
    assert "framework not recognised" in reasons["notes"]
    assert "invalid model name" in reasons["Bad Name"]

    pulled = store.pull("churn:2", tmp_path / "churn")
    assert joblib.load(pulled / "model.joblib").predict(np.zeros((1, 4))).shape == (1,)
    # files were moved into the version: nothing new; the unservable stay reported
    again = store.discover(allow_unsafe=True)
    assert again.added == []
    assert {g.name for g in again.unservable} == {"notes", "Bad Name"}
    assert store.versions("churn") == [1, 2]


def test_fetch_model_cache_and_repair(store: ModelStore, store_url: str, model_dir: Path, tmp_path: Path) -> None:
    store.upload(model_dir, "cached")
    cache_dir = tmp_path / "cache"
    tree = fetch_model("cached:1", store_url, cache_dir)
    assert _sha(tree / "model.joblib") == _sha(model_dir / "model.joblib")
    assert (tree / "extra" / "classes.txt").is_file()
    assert fetch_model("cached:1", store_url, cache_dir) == tree  # the cache hit returns the same tree
    cached = manifest_of(tree)
    assert cached is not None and cached.ref == "cached:1" and cached.framework == "sklearn"

    # corrupt a cached file (same size, different bytes): the next fetch notices and repairs it
    target = tree / "model.joblib"
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    target.chmod(0o644)
    target.write_bytes(bytes(data))
    repaired = fetch_model("cached:1", store_url, cache_dir)
    assert _sha(repaired / "model.joblib") == _sha(model_dir / "model.joblib")

    # a removed cached file is fetched again too; an alias resolves through the store
    (repaired / "extra" / "classes.txt").unlink()
    store.set_alias("cached", 1, "production")
    again = fetch_model("cached:production", store_url, cache_dir)
    assert (again / "extra" / "classes.txt").read_text().startswith("setosa")


def test_unknown_names_and_versions(store: ModelStore, iris_model_file: Path) -> None:
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        store.versions("nope")
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        store.get_manifest("nope:2")
    store.upload(iris_model_file, "known")
    with pytest.raises(NotFound, match="no version 2"):
        store.get_manifest("known:2")
    with pytest.raises(ValidationError, match="invalid model name"):
        store.upload(iris_model_file, "-bad")
    with pytest.raises(ValidationError, match="invalid model name"):
        store.get_manifest("UPPER:1")


def test_manifest_json_round_trip(store: ModelStore, iris_model_file: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("a,b,label\n1,2.5,x\n2,,y\n3,4.5,x\n")
    m = store.upload(iris_model_file, "profiled", training_data=csv_path)
    again = type(m).from_dict(json.loads(m.to_json()))
    assert again == m
    assert m.training_profile is not None and m.training_profile["rows"] == 3


def test_large_file_goes_multipart_with_progress(store_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import hydro_serving.store.s3 as s3_backend

    monkeypatch.setattr(s3_backend, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)  # S3's smallest part size
    big = tmp_path / "big.onnx"
    big.write_bytes(np.random.default_rng(1).bytes(11 * 1024 * 1024 + 7))
    seen: dict[str, int] = {}

    def progress(path: str, n: int) -> None:
        seen[path] = seen.get(path, 0) + n

    store = open_store(store_url)
    manifest = store.upload(big, "big", progress=progress)
    assert seen == {"big.onnx": big.stat().st_size}
    if store_url.startswith("s3://"):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = store_url[len("s3://"):].partition("/")
        client = boto3.session.Session().client("s3", config=Config(s3={"addressing_style": "path"}))
        etag = client.head_object(Bucket=bucket, Key=f"{prefix}/models/big/1/big.onnx")["ETag"]
        assert etag.strip('"').endswith("-3")  # three parts: a multipart upload
    pulled = store.pull(manifest.ref, tmp_path / "out")
    assert _sha(pulled / "big.onnx") == _sha(big)


def test_discovery_of_foreign_numbered_folder(store: ModelStore, put_foreign: Callable[[str, bytes], None],
                                              iris_model_file: Path) -> None:
    put_foreign("models/scorer/7/model.joblib", iris_model_file.read_bytes())
    report = store.discover(allow_unsafe=True)
    # numbers of foreign folders are never claimed (their files live there): the new version is 8
    assert [m.ref for m in report.added] == ["scorer:8"]
    assert [f.path for f in report.added[0].files] == ["model.joblib"]
    assert store.discover(allow_unsafe=True).added == []
