"""The S3 backend: any S3-compatible endpoint through boto3 and the standard AWS configuration.

``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), keys, ``AWS_PROFILE`` and region come from
botocore's usual chain; nothing here invents its own settings. Every botocore/boto3 exception is
translated to :class:`StoreError` in :func:`_translate`, the one place, so a caller never sees a
traceback for an unreachable endpoint or a rejected key. Conditional writes use
``If-None-Match: *`` (create only if absent) and ``If-Match: <ETag>`` (compare-and-swap), both
honoured by AWS S3, moto and Ceph RGW (checked by the tests). Ceph RGW compares ``If-Match``
with the *unquoted* ETag while AWS documents the quoted form, so a refused unquoted
``If-Match`` is retried once quoted: each attempt is itself conditional, so a stale tag never
wins. ``DeleteObject`` with ``If-Match`` is ignored by RGW, so the store never relies on a
conditional delete (an alias is removed by a conditional overwrite with a tombstone).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydro_serving.errors import HydroError, StoreError
from hydro_serving.store.backend import Backend, MissingKey, ObjectInfo, Progress

MULTIPART_THRESHOLD = 16 * 1024 * 1024
CONFLICT_RETRIES = 5
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
    "AuthorizationHeaderMalformed", "InvalidClientTokenId", "Forbidden", "403",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class S3Backend(Backend):
    def __init__(self, bucket: str, prefix: str = "") -> None:
        import boto3
        import boto3.exceptions
        import botocore.config
        import botocore.exceptions

        self._botocore_exc = botocore.exceptions
        self._boto3_exc = boto3.exceptions
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.endpoint = endpoint or "AWS S3"
        options: dict[str, Any] = {
            "connect_timeout": 5,
            "read_timeout": 60,
            "retries": {"max_attempts": 2, "mode": "standard"},  # one retry: fail fast, fall back to the cache
            # Checksums only where S3 requires them: older S3-compatible servers reject the
            # aws-chunked trailers newer botocore sends by default; we verify sha256 ourselves.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
        if endpoint:
            options["s3"] = {"addressing_style": "path"}  # custom endpoints rarely have wildcard DNS
        try:
            session = boto3.session.Session()
            self._client = session.client("s3", config=botocore.config.Config(**options))
        except Exception as exc:
            raise self._translate(exc, "opening the S3 client") from exc
        from boto3.s3.transfer import TransferConfig

        self._transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                        multipart_chunksize=MULTIPART_THRESHOLD, max_concurrency=4)
        self._ready = False

    # ---- the one place library exceptions become StoreError ---------------------------------

    def _translate(self, exc: BaseException, what: str) -> HydroError:
        bce = self._botocore_exc
        if isinstance(exc, HydroError):
            return exc
        if isinstance(exc, bce.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = _one_line(err.get("Message") or code)
            if code in _CREDENTIAL_CODES or status in (401, 403):
                return StoreError(f"S3 at {self.endpoint} refused {what}: {code or status} "
                                  f"(check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
            if code == "NoSuchBucket":
                return StoreError(f"bucket '{self.bucket}' does not exist at {self.endpoint}")
            return StoreError(f"S3 at {self.endpoint} failed {what}: {code or status} {message}")
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return StoreError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
        if isinstance(exc, bce.ProfileNotFound):
            return StoreError(f"AWS profile not found: {_one_line(str(exc))}")
        if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError | bce.ConnectionClosedError
                      | bce.ReadTimeoutError | bce.ProxyConnectionError):
            return StoreError(f"cannot reach the S3 endpoint {self.endpoint} ({what})")
        if isinstance(exc, bce.BotoCoreError | self._boto3_exc.Boto3Error):
            text = _one_line(str(exc))
            if "Could not connect" in text or "Connect timeout" in text:
                return StoreError(f"cannot reach the S3 endpoint {self.endpoint} ({what})")
            for code in _CREDENTIAL_CODES:
                if f"({code})" in text:
                    return StoreError(f"S3 at {self.endpoint} refused {what}: {code} "
                                      f"(check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
            return StoreError(f"S3 at {self.endpoint} failed {what}: {text}")
        if isinstance(exc, ValueError) and "endpoint" in str(exc).lower():
            return StoreError(f"invalid S3 endpoint {self.endpoint}: {_one_line(str(exc))}")
        return StoreError(f"S3 {what} failed: {type(exc).__name__}: {_one_line(str(exc))}")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (MissingKey, HydroError):
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    def _is_missing(self, exc: BaseException) -> bool:
        if isinstance(exc, self._botocore_exc.ClientError):
            return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_CODES
        return False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # ---- Backend ---------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        with self._errors(f"reading {key}"):
            try:
                return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except self._botocore_exc.ClientError as exc:
                if self._is_missing(exc):
                    raise MissingKey(key) from exc
                raise

    def write(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        self.prepare_write()
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        with self._errors(f"writing {key}"):
            for attempt in range(CONFLICT_RETRIES):
                try:
                    self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
                    return True
                except self._botocore_exc.ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code", ""))
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if exclusive and (code == "PreconditionFailed" or status == 412):
                        return False
                    if exclusive and (code == "ConditionalRequestConflict" or status == 409):
                        time.sleep(0.05 * (attempt + 1))  # AWS: a concurrent conditional write; retry
                        continue
                    raise
            return False  # still conflicting: treat the key as taken, the caller moves on

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        with self._errors(f"reading {key}"):
            try:
                obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
                return obj["Body"].read(), str(obj.get("ETag", "")).strip('"')
            except self._botocore_exc.ClientError as exc:
                if self._is_missing(exc):
                    raise MissingKey(key) from exc
                raise

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        if tag is None:
            return self.write(key, data, exclusive=True)
        self.prepare_write()
        with self._errors(f"writing {key}"):
            for condition in (tag.strip('"'), f'"{tag.strip(chr(34))}"'):
                try:
                    self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=condition)
                    return True
                except self._botocore_exc.ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code", ""))
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                        continue
                    if self._is_missing(exc):
                        return False
                    raise
            return False

    def uploads_in_progress(self, prefix: str) -> list[str]:
        strip = len(self._key(""))
        found: list[str] = []
        with self._errors(f"listing multipart uploads under {prefix or '/'}"):
            try:
                paginator = self._client.get_paginator("list_multipart_uploads")
                for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                    found.extend(u["Key"][strip:] for u in page.get("Uploads", []) or [])
            except self._botocore_exc.ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) == "NoSuchBucket":
                    return []
                raise
        return found

    def upload(self, key: str, source: Path, progress: Progress | None = None) -> None:
        self.prepare_write()
        with self._errors(f"uploading {source.name}"):
            try:
                self._client.upload_file(str(source), self.bucket, self._key(key), Callback=progress,
                                         Config=self._transfer)
            except FileNotFoundError as exc:
                raise StoreError(f"{source} disappeared during the upload") from exc

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        with self._errors(f"downloading {key}"):
            try:
                self._client.download_file(self.bucket, self._key(key), str(dest), Callback=progress,
                                           Config=self._transfer)
            except self._botocore_exc.ClientError as exc:
                if self._is_missing(exc):
                    raise MissingKey(key) from exc
                raise

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self._key(""))
        with self._errors(f"listing {prefix or '/'}"):
            paginator = self._client.get_paginator("list_objects_v2")
            try:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                    for obj in page.get("Contents", []):
                        yield ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].timestamp(),
                                         str(obj.get("ETag", "")).strip('"'))
            except self._botocore_exc.ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) == "NoSuchBucket":
                    return  # nothing stored yet: the bucket is created on the first upload
                raise

    def size(self, key: str) -> int | None:
        with self._errors(f"checking {key}"):
            try:
                return int(self._client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
            except self._botocore_exc.ClientError as exc:
                if self._is_missing(exc):
                    return None
                raise

    def delete(self, keys: list[str]) -> None:
        with self._errors("deleting objects"):
            for start in range(0, len(keys), 1000):
                batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
                if batch:
                    self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def prepare_write(self) -> None:
        """Create the bucket on first write; a clear StoreError when that is not allowed."""
        if self._ready:
            return
        bce = self._botocore_exc
        with self._errors(f"checking bucket '{self.bucket}'"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                self._ready = True
                return
            except bce.ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404 and not self._is_missing(exc):
                    raise
        region = self._client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except bce.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StoreError(f"bucket '{self.bucket}' does not exist at {self.endpoint} and could not be "
                                 f"created: {code} {_one_line(exc.response.get('Error', {}).get('Message', ''))}"
                                 ) from exc
        except Exception as exc:
            raise self._translate(exc, f"creating bucket '{self.bucket}'") from exc
        self._ready = True
