"""The attacker's test of model trust, end to end: a real gateway, real replicas, the real Ceph RGW S3.

The attacker can write anything into the bucket with plain boto3 but holds no signing key. Their
pickle writes a marker file when unpickled; the marker must never appear. The last step shows
that the same pickle does write the marker when it is unpickled, so the marker would tell.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.store import SigningKey, open_store
from hydro_serving.store.trust import generate_keys
from tests.gateway_fixtures import gateway_factory  # noqa: F401 - the fixture

IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]


class Evil:
    """Unpickling this calls ``Path.write_text(marker, "pwned")``: pickle is code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "pwned"))


@pytest.fixture
def s3_env(rgw_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str, str]:
    """(boto3 client, bucket, store URL) on the real S3, exported for the gateway and its replicas."""
    import boto3
    from botocore.config import Config

    for key, value in rgw_s3.items():
        monkeypatch.setenv(key, value)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    bucket = f"hydro-trust-{uuid.uuid4().hex[:10]}"
    url = f"s3://{bucket}/pfx"
    monkeypatch.setenv("HYDRO_STORE", url)
    client = boto3.session.Session().client("s3", config=Config(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=bucket)
    return client, bucket, url


@pytest.mark.s3
def test_a_dropped_or_unsigned_pickle_never_runs_and_only_signed_bytes_load(
        s3_env: tuple[Any, str, str], gateway_factory: Any, tmp_path: Path,  # noqa: F811
        iris_model_file: Path) -> None:
    client, bucket, url = s3_env
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Evil(marker))
    private, public, _ = generate_keys(tmp_path / "keys")
    store = open_store(url)
    store.upload(iris_model_file, "iris", sign_key=SigningKey.load(private))  # iris:1, signed by the team

    gw = gateway_factory("--trusted-keys", str(public), "--discover-interval", "0.3")

    # 1. dropped with plain boto3 under the model's prefix: discovery does not adopt it
    client.put_object(Bucket=bucket, Key="pfx/models/iris/model.joblib", Body=evil)
    client.put_object(Bucket=bucket, Key="pfx/models/iris/7/model.pkl", Body=evil)
    gw.wait_for(lambda: gw.log().count("pickle-based files") >= 2, timeout=30, what="discovery passes")
    time.sleep(1.0)  # a few more passes (interval 0.3s); not a timing assertion
    assert store.versions("iris") == [1]

    # 2. the signed version deploys, is pinned, and serves
    status, out = gw.admin("POST", "/system/functions", {"service": "iris", "hydro": {
        "name": "iris", "lang": "sklearn", "model": "iris"}})
    assert status == 202, out
    pin = gw.status("iris")["modelPin"]
    manifest = store.get_manifest("iris:1")
    assert pin == f"iris:1@sha256:{manifest.content_digest()}"
    status, _, body = gw.invoke("iris", IRIS_ROW)
    assert (status, body) == (200, [0])

    # 3. an unsigned upload (someone with store access, without the key) is refused at deploy: 403, says why
    evil_file = tmp_path / "model.joblib"
    evil_file.write_bytes(evil)
    unsigned = store.upload(evil_file, "iris").ref  # now "latest" (iris:8: the foreign folder 7 is skipped)
    for model in (unsigned, "iris"):
        status, out = gw.admin("POST", "/system/functions", {"service": "evil", "hydro": {
            "name": "evil", "lang": "sklearn", "model": model}})
        assert status == 403 and "not signed" in out["error"] and out["field"] == "model", out

    # 4. the signed manifest copied onto a model with one byte changed: the signature does not match
    changed = bytearray(iris_model_file.read_bytes())
    changed[len(changed) // 2] ^= 1
    forged = manifest.to_dict()
    forged["version"] = 9  # iris:9, beside the unsigned iris:8
    forged["files"][0].update(size=len(changed), sha256=hashlib.sha256(changed).hexdigest())
    client.put_object(Bucket=bucket, Key="pfx/models/iris/9/.claim", Body=b"{}")
    client.put_object(Bucket=bucket, Key="pfx/models/iris/9/model.joblib", Body=bytes(changed))
    client.put_object(Bucket=bucket, Key="pfx/models/iris/9/manifest.json", Body=json.dumps(forged).encode())
    sig = client.get_object(Bucket=bucket, Key="pfx/models/iris/1/manifest.sig")["Body"].read()
    client.put_object(Bucket=bucket, Key="pfx/models/iris/9/manifest.sig", Body=sig)
    status, out = gw.admin("POST", "/system/functions", {"service": "forged", "hydro": {
        "name": "forged", "lang": "sklearn", "model": "iris:9"}})
    assert status == 403 and "does not match" in out["error"], out

    # 5. the deployed version itself rewritten in the store (file + manifest, one byte changed): the
    #    replica's next cold start refuses it (5xx), with a fresh cache so nothing is served from disk
    client.put_object(Bucket=bucket, Key="pfx/models/iris/1/model.joblib", Body=bytes(changed))
    rewritten = manifest.to_dict()
    rewritten["files"][0].update(size=len(changed), sha256=hashlib.sha256(changed).hexdigest())
    client.put_object(Bucket=bucket, Key="pfx/models/iris/1/manifest.json", Body=json.dumps(rewritten).encode())
    status, out = gw.admin("POST", "/system/scale-function/iris", {"replicas": 0})
    assert status in (200, 202), out
    gw.wait_for(lambda: not gw.replica_pids("iris"), timeout=30, what="iris scaled to zero")
    shutil.rmtree(os.environ["HYDRO_CACHE"], ignore_errors=True)
    # and the function's own cache, where a sandboxed replica's model was fetched by the gateway (README: Trust)
    shutil.rmtree(gw.state_dir / "functions" / "iris" / "model-cache", ignore_errors=True)
    status, _, body = gw.invoke("iris", IRIS_ROW, timeout=120, headers={"Authorization": f"Bearer {gw.token}"})
    assert status >= 500, body
    assert "UntrustedModelError" in body["error"] and "pinned" in body["error"], body  # the operator reads why

    assert not marker.exists()  # nothing was ever unpickled
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(control)))
    assert control.read_text() == "pwned"  # ... and the marker would have told
