"""Store fixtures: the same tests run against a directory, moto's S3 server and a real Ceph RGW."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hydro_serving.store import ModelStore, open_store

BACKENDS = ["dir", "moto", pytest.param("rgw", marks=pytest.mark.s3)]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `hydro ...` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from hydro_serving.cli.main import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty store URL on the backend under test, also set as HYDRO_STORE."""
    kind = request.param
    if kind == "dir":
        url = f"file://{tmp_path / 'store'}"
    else:
        env = request.getfixturevalue("moto_s3" if kind == "moto" else "rgw_s3")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(var, raising=False)
        url = f"s3://hydro-test-{uuid.uuid4().hex[:12]}/pfx"
    monkeypatch.setenv("HYDRO_STORE", url)
    return url


@pytest.fixture
def store(store_url: str) -> ModelStore:
    return open_store(store_url)


@pytest.fixture
def put_foreign(store_url: str) -> Callable[[str, bytes], None]:
    """Write an object the way another client would: plain boto3, or a plain file for a directory store."""
    if store_url.startswith("file://"):
        root = Path(store_url[len("file://"):])

        def put_file(key: str, data: bytes) -> None:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return put_file

    import boto3

    bucket, _, prefix = store_url[len("s3://"):].partition("/")
    from botocore.config import Config

    # a fresh session: boto3's default one caches the credentials of whichever test came first
    client = boto3.session.Session().client("s3", config=Config(s3={"addressing_style": "path"}))
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)

    def put_object(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}" if prefix else key, Body=data)

    return put_object
