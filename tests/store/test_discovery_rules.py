"""Discovery publishes only finished uploads, only safe formats by default, once, from any number of scanners."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hydro_serving.store import ModelStore, open_store


def _onnx_bytes() -> bytes:
    return b"\x08\x07\x12\x07skl2onnx" + b"\x00" * 64  # an ONNX-looking file: detection is by name, never loaded


def test_a_group_is_adopted_only_after_two_scans_saw_it_unchanged(store: ModelStore,
                                                                  put_foreign: Callable[[str, bytes], None]) -> None:
    put_foreign("models/late/model.onnx", _onnx_bytes())
    first = store.discover(min_age=30, now=1000.0)
    assert first.added == [] and "first time" in " ".join(first.skipped)
    assert store.discover(min_age=30, now=1010.0).added == []  # unchanged, but not for long enough
    put_foreign("models/late/extra.onnx", _onnx_bytes())  # the upload goes on: another file arrives
    assert store.discover(min_age=30, now=1040.0).added == []  # the set changed: the clock starts again
    assert store.discover(min_age=30, now=1060.0).added == []
    report = store.discover(min_age=30, now=1071.0)
    assert [m.ref for m in report.added] == ["late:1"]
    manifest = report.added[0]
    assert manifest.origin == "discovery" and {f.path for f in manifest.files} == {"model.onnx", "extra.onnx"}
    assert store.discover(min_age=30, now=2000.0).added == []  # the files were moved: discovered once


@pytest.mark.s3
def test_a_multipart_upload_in_progress_holds_discovery(rgw_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    import boto3
    from botocore.config import Config

    for key, value in rgw_s3.items():
        monkeypatch.setenv(key, value)
    bucket = f"hydro-mpu-{uuid.uuid4().hex[:10]}"
    store = open_store(f"s3://{bucket}/pfx")
    client = boto3.session.Session().client("s3", config=Config(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="pfx/models/big/saved_model.pb", Body=b"graph")
    upload = client.create_multipart_upload(Bucket=bucket, Key="pfx/models/big/variables/variables.data-00000")
    report = store.discover(min_age=0)  # the two scans of one call would agree; the multipart upload holds it
    assert report.added == [] and "upload in progress" in " ".join(report.skipped)
    part = client.upload_part(Bucket=bucket, Key="pfx/models/big/variables/variables.data-00000",
                              UploadId=upload["UploadId"], PartNumber=1, Body=b"w" * 1024)
    client.complete_multipart_upload(Bucket=bucket, Key="pfx/models/big/variables/variables.data-00000",
                                     UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    report = store.discover(min_age=0)
    assert [m.ref for m in report.added] == ["big:1"] and report.added[0].framework == "tensorflow"
    assert {f.path for f in report.added[0].files} == {"saved_model.pb", "variables/variables.data-00000"}


def test_pickle_is_adopted_only_with_the_operators_opt_in(store: ModelStore, iris_model_file: Path,
                                                          put_foreign: Callable[[str, bytes], None]) -> None:
    put_foreign("models/churn/model.joblib", iris_model_file.read_bytes())
    put_foreign("models/sneaky/model.onnx", iris_model_file.read_bytes())  # pickle bytes under a safe name
    report = store.discover()
    assert report.added == []
    reasons = {g.name: g.reason for g in report.unservable}
    assert "pickle" in reasons["churn"] and "--discover-unsafe-formats" in reasons["churn"]
    assert "pickle" in reasons["sneaky"]
    assert sorted(m.ref for m in store.discover(allow_unsafe=True).added) == ["churn:1", "sneaky:1"]


SCANNER = r"""
import sys
from hydro_serving.store import open_store
report = open_store(sys.argv[1]).discover(min_age=0)
print(",".join(m.ref for m in report.added))
"""


def test_two_scanners_at_once_publish_one_version(store_url: str, store: ModelStore, tmp_path: Path,
                                                  put_foreign: Callable[[str, bytes], None]) -> None:
    for i in range(4):
        put_foreign(f"models/shared/part-{i}.onnx", _onnx_bytes() + bytes([i]))
    script = tmp_path / "scan.py"
    script.write_text(SCANNER)
    procs = [subprocess.Popen([sys.executable, str(script), store_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    added = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        added += [ref for ref in out.strip().split(",") if ref]
    assert added == ["shared:1"]
    assert store.versions("shared") == [1]
    assert len(store.get_manifest("shared:1").files) == 4


@pytest.mark.s3
def test_hostile_key_names_are_reported_and_do_not_stop_discovery(rgw_s3: dict[str, str],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Keys with '..' or empty segments (legal in S3) are reported; other models are still adopted."""
    import boto3
    from botocore.config import Config

    for key, value in rgw_s3.items():
        monkeypatch.setenv(key, value)
    bucket = f"hydro-keys-{uuid.uuid4().hex[:10]}"
    store = open_store(f"s3://{bucket}")
    client = boto3.session.Session().client("s3", config=Config(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="models/evil/../../../escape.onnx", Body=_onnx_bytes())
    client.put_object(Bucket=bucket, Key="models/evil2/a//b.onnx", Body=_onnx_bytes())
    client.put_object(Bucket=bucket, Key="models/fine/", Body=b"")  # a console's folder marker
    client.put_object(Bucket=bucket, Key="models/fine/model.onnx", Body=_onnx_bytes())
    report = store.discover(min_age=0)
    assert [m.ref for m in report.added] == ["fine:1"]
    reasons = " ".join(g.reason for g in report.unservable)
    assert "is not a relative path inside the version" in reasons
    assert not (tmp_path.parent / "escape.onnx").exists()
