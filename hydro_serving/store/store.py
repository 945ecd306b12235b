"""ModelStore: versioned models over a Backend (S3 or a directory), the one class callers use.

Layout under the store root (bucket prefix or directory)::

    models/<name>/<version>/.claim            claimed with an exclusive create; never deleted
    models/<name>/<version>/<model files>     as uploaded (a file, or a directory's tree)
    models/<name>/<version>/manifest.json     written last: a version exists iff this exists
    models/<name>/<version>/.removed          left by ``remove`` beside the claim (a tombstone)
    models/<name>/.aliases/<alias>.json       {"version": N}; ``latest`` is implicit (highest)
    models/<name>/.discovery/<digest>         marks a group of foreign files as taken by discovery

Why a claim object: two uploads of one name race for the next number; the exclusive create
(S3 ``If-None-Match: *``, ``O_EXCL`` on disk) lets exactly one win each number, the other
retries with the next. The claim stays after a ``remove`` as a tombstone, so a number is never
reused and a cache keyed by ``name:version`` can never serve the wrong model.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.errors import ConfigError, Conflict, NotFound, StoreError, ValidationError
from hydro_serving.store.backend import Backend, MissingKey, ObjectInfo
from hydro_serving.store.frameworks import detect_framework
from hydro_serving.store.hashing import safe_relpath, sha256_file
from hydro_serving.store.manifest import MANIFEST_NAME, FileEntry, Manifest
from hydro_serving.store.profile import profile_csv
from hydro_serving.store.refs import LATEST, ModelRef, check_alias, check_name, check_version, parse_ref
from hydro_serving.store.signature_file import load_signature_file, signature_from_data

MODELS = "models/"
CLAIM = ".claim"
REMOVED = ".removed"
ALIASES = ".aliases"
DISCOVERY = ".discovery"
RESERVED = {MANIFEST_NAME, CLAIM}
MAX_CLAIM_ATTEMPTS = 1000
_FRAMEWORK_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

FileProgress = Callable[[str, int], None]
"""Upload/download progress: ``(relative path, bytes since the previous call)``."""


@dataclass
class UnservableGroup:
    """Foreign files discovery could not turn into a version, and why."""

    name: str
    keys: list[str]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "keys": self.keys, "reason": self.reason}


@dataclass
class DiscoveryReport:
    added: list[Manifest] = field(default_factory=list)
    unservable: list[UnservableGroup] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # name:version claimed but never finished
    skipped: list[str] = field(default_factory=list)  # too recent, or taken by a concurrent discovery

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [m.ref for m in self.added],
            "unservable": [u.to_dict() for u in self.unservable],
            "incomplete": self.incomplete,
            "skipped": self.skipped,
        }


def _version_dir(name: str, version: int) -> str:
    return f"{MODELS}{name}/{version}/"


def _collect_files(path: Path) -> list[tuple[str, Path]]:
    """(relative posix path, local path) of every file to upload, in a stable order."""
    if path.is_file():
        return [(path.name, path)]
    files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    if not files:
        raise ValidationError(f"{path} holds no files", field="path")
    return files


class ModelStore:
    """Upload, list, resolve, alias, pull, remove and discover models; backend-agnostic."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def url(self) -> str:
        return self.backend.url

    def __repr__(self) -> str:
        return f"ModelStore({self.url!r})"

    # ---- reading -----------------------------------------------------------------------------

    def _scan(self, name: str) -> list[ObjectInfo]:
        return list(self.backend.list(f"{MODELS}{name}/"))

    @staticmethod
    def _versions_in(name: str, objects: Iterable[ObjectInfo], marker: str) -> set[int]:
        pattern = re.compile(rf"^{re.escape(MODELS)}{re.escape(name)}/(\d+)/{re.escape(marker)}$")
        return {int(m.group(1)) for o in objects if (m := pattern.match(o.key))}

    def list_models(self) -> list[str]:
        """Names with at least one complete version."""
        pattern = re.compile(rf"^{re.escape(MODELS)}([^/]+)/\d+/{re.escape(MANIFEST_NAME)}$")
        return sorted({m.group(1) for o in self.backend.list(MODELS) if (m := pattern.match(o.key))})

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, ascending; NotFound when there is none."""
        check_name(name)
        found = sorted(self._versions_in(name, self._scan(name), MANIFEST_NAME))
        if not found:
            raise NotFound(f"unknown model '{name}' in {self.url}", field="name")
        return found

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for ``name`` (``latest`` not included: it is implicit)."""
        check_name(name)
        out: dict[str, int] = {}
        prefix = f"{MODELS}{name}/{ALIASES}/"
        for obj in self.backend.list(prefix):
            alias = obj.key[len(prefix):].removesuffix(".json")
            try:
                out[alias] = int(json.loads(self.backend.read(obj.key))["version"])
            except (MissingKey, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or damaged: an alias that resolves to nothing
        return dict(sorted(out.items()))

    def resolve(self, ref: str | ModelRef) -> tuple[str, int]:
        """``name[:version|alias]`` -> (name, version) of a complete version, or NotFound."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.version is not None:
            return parsed.name, parsed.version
        if parsed.alias == LATEST:
            return parsed.name, self.versions(parsed.name)[-1]
        key = f"{MODELS}{parsed.name}/{ALIASES}/{parsed.alias}.json"
        try:
            raw = self.backend.read(key)
        except MissingKey:
            self.versions(parsed.name)  # NotFound for the model itself first
            raise NotFound(f"model '{parsed.name}' has no alias '{parsed.alias}'", field="ref") from None
        try:
            return parsed.name, int(json.loads(raw)["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"damaged alias object {key}") from exc

    def get_manifest(self, ref: str | ModelRef) -> Manifest:
        name, version = self.resolve(ref)
        try:
            raw = self.backend.read(_version_dir(name, version) + MANIFEST_NAME)
        except MissingKey:
            try:
                have = ", ".join(map(str, self.versions(name)))
            except NotFound:
                raise NotFound(f"unknown model '{name}' in {self.url}", field="name") from None
            raise NotFound(f"model '{name}' has no version {version} (versions: {have})", field="version") from None
        return Manifest.from_json(raw, where=f"{name}:{version}")

    # ---- writing -----------------------------------------------------------------------------

    def _claim(self, name: str) -> tuple[int, str]:
        """Win the next free version number with an exclusive create; returns (version, token)."""
        digits = re.compile(rf"^{re.escape(MODELS)}{re.escape(name)}/(\d+)/")
        taken = {int(m.group(1)) for o in self._scan(name) if (m := digits.match(o.key))}
        version = max(taken, default=0) + 1
        token = uuid.uuid4().hex
        body = json.dumps({"token": token, "host": socket.gethostname(), "pid": os.getpid(),
                           "at": time.time()}).encode()
        for _ in range(MAX_CLAIM_ATTEMPTS):
            key = _version_dir(name, version) + CLAIM
            if self.backend.write(key, body, exclusive=True) and self._holds(key, token):
                return version, token
            version += 1
        raise StoreError(f"could not claim a version of '{name}' after {MAX_CLAIM_ATTEMPTS} attempts")

    def _holds(self, claim_key: str, token: str) -> bool:
        """Defence in depth against a server that ignores If-None-Match: is the claim still ours?"""
        try:
            return json.loads(self.backend.read(claim_key)).get("token") == token
        except (MissingKey, ValueError, AttributeError):
            return False

    def upload(
        self,
        path: str | Path,
        name: str,
        *,
        framework: str | None = None,
        signature: Signature | dict[str, Any] | str | Path | None = None,
        training_data: str | Path | None = None,
        metadata: dict[str, Any] | None = None,
        progress: FileProgress | None = None,
    ) -> Manifest:
        """Store a model file or directory as the next version of ``name``; returns its manifest.

        Everything that can be wrong with the input is checked before anything is written. Files
        are uploaded, then checked (size in the store, source unchanged since it was hashed), and
        only then is the manifest written: a failure at any point leaves no visible version.
        """
        check_name(name)
        path = Path(path)
        if not path.exists():
            raise ValidationError(f"model path {path} does not exist", field="path")
        files = _collect_files(path)
        for rel, _ in files:
            if rel in RESERVED:
                raise ValidationError(f"{path} contains '{rel}', a name the store reserves; rename it", field="path")
        if framework is None:
            framework = detect_framework(path)
            if framework is None:
                raise ValidationError(
                    f"cannot tell the framework of {path}; pass --framework "
                    "(sklearn, onnx, spark, tensorflow, xgboost, lightgbm or a custom name)", field="framework")
        elif not _FRAMEWORK_RE.match(framework):
            raise ValidationError(f"invalid framework name {framework!r}", field="framework")
        sig = self._signature(signature)
        profile = profile_csv(training_data) if training_data is not None else None
        meta = dict(metadata or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"metadata must be JSON-serialisable: {exc}", field="metadata") from exc

        entries: list[FileEntry] = []
        stats: list[tuple[int, int]] = []
        for rel, local in files:
            st = local.stat()
            entries.append(FileEntry(rel, st.st_size, sha256_file(local)))
            stats.append((st.st_size, st.st_mtime_ns))

        self.backend.prepare_write()
        version, token = self._claim(name)
        base = _version_dir(name, version)
        written: list[str] = []
        try:
            for (rel, local), before in zip(files, stats, strict=True):
                key = base + rel
                written.append(key)
                cb = (lambda n, _rel=rel: progress(_rel, n)) if progress else None
                self.backend.upload(key, local, cb)
                try:
                    st = local.stat()
                except FileNotFoundError as exc:
                    raise StoreError(f"{local} disappeared during the upload") from exc
                if (st.st_size, st.st_mtime_ns) != before:
                    raise StoreError(f"{local} changed during the upload; upload it again")
            for entry in entries:
                stored = self.backend.size(base + entry.path)
                if stored != entry.size:
                    raise StoreError(f"{name}:{version}: {entry.path} has {stored} bytes in the store, "
                                     f"expected {entry.size}")
            if not self._holds(base + CLAIM, token):
                raise StoreError(f"version {version} of '{name}' was claimed by another upload")
            manifest = Manifest(name=name, version=version, framework=framework, files=entries, signature=sig,
                                metadata=meta, training_profile=profile)
            if not self.backend.write(base + MANIFEST_NAME, manifest.to_json(), exclusive=True):
                raise StoreError(f"version {version} of '{name}' already has a manifest")
        except BaseException:
            self._discard(written)
            raise
        return manifest

    def _discard(self, keys: list[str]) -> None:
        """Best-effort removal of a failed upload's files; the claim stays so the number is not reused."""
        with contextlib.suppress(Exception):  # the original failure is the one worth reporting
            self.backend.delete(keys)

    @staticmethod
    def _signature(signature: Signature | dict[str, Any] | str | Path | None) -> Signature | None:
        if signature is None or isinstance(signature, Signature):
            return signature
        if isinstance(signature, str | Path):
            return load_signature_file(signature)
        return signature_from_data(signature)

    def set_alias(self, name: str, version: int, alias: str) -> None:
        """Point ``alias`` at an existing version (moving it if it pointed elsewhere)."""
        check_name(name)
        version = check_version(version)
        if alias == LATEST:
            raise ValidationError("'latest' is implicit (the highest version) and cannot be set", field="alias")
        check_alias(alias)
        self.get_manifest(ModelRef(name, version=version))  # NotFound unless the version exists
        self.backend.write(f"{MODELS}{name}/{ALIASES}/{alias}.json",
                           json.dumps({"version": version, "at": time.time()}).encode())

    def remove_alias(self, name: str, alias: str) -> None:
        check_name(name)
        check_alias(alias)
        key = f"{MODELS}{name}/{ALIASES}/{alias}.json"
        if self.backend.size(key) is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'", field="alias")
        self.backend.delete([key])

    def remove(self, name: str, version: int) -> None:
        """Delete a version (manifest first, so it disappears at once); refuse while an alias points at it."""
        check_name(name)
        version = check_version(version)
        self.get_manifest(ModelRef(name, version=version))
        pointing = [a for a, v in self.aliases(name).items() if v == version]
        if pointing:
            raise Conflict(f"{name}:{version} is aliased as {', '.join(pointing)}; move the alias first",
                           field="version")
        base = _version_dir(name, version)
        self.backend.write(base + REMOVED, json.dumps({"at": time.time()}).encode())
        self.backend.delete([base + MANIFEST_NAME])
        keep = (base + CLAIM, base + MANIFEST_NAME, base + REMOVED)
        rest = [o.key for o in self.backend.list(base) if o.key not in keep]
        self.backend.delete(rest)

    # ---- reading files -----------------------------------------------------------------------

    def download_file(self, manifest: Manifest, entry: FileEntry, dest: Path,
                      progress: FileProgress | None = None) -> None:
        """Download one file of a version to ``dest`` and verify its size and sha256.

        A mismatch is a StoreError: the stored object is not what the manifest promises.
        """
        key = _version_dir(manifest.name, manifest.version) + safe_relpath(entry.path)
        cb = (lambda n: progress(entry.path, n)) if progress else None
        try:
            self.backend.download(key, dest, cb)
        except MissingKey:
            raise StoreError(f"{manifest.ref}: {entry.path} is missing from the store") from None
        size = dest.stat().st_size
        digest = sha256_file(dest)
        if size != entry.size or digest != entry.sha256:
            raise StoreError(f"{manifest.ref}: {entry.path} in the store does not match its sha256 "
                             f"(got {digest[:12]}, expected {entry.sha256[:12]})")

    def pull(self, ref: str, dest: str | Path, progress: FileProgress | None = None) -> Path:
        """Download a version into ``dest`` (created), each file verified and renamed into place."""
        manifest = self.get_manifest(ref)
        dest = Path(dest)
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {dest}: {exc.strerror or exc}", field="dest") from exc
        for entry in manifest.files:
            target = dest / safe_relpath(entry.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
            try:
                self.download_file(manifest, entry, tmp, progress)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return dest

    # ---- discovery ---------------------------------------------------------------------------

    def discover(self, min_age: float = 0.0) -> DiscoveryReport:
        """Turn files put under ``models/<name>/`` by other clients into versions.

        Foreign files of one name form one group (a foreign numeric folder ``models/<name>/7/``
        without a claim is its own group). A group whose framework is detected is uploaded as a
        new version through :meth:`upload` (so it is verified like any upload) and its original
        objects are then deleted: discovery *moves* files, so each drop is discovered once and a
        later drop at the same key becomes the next version. A group no template can serve is
        reported and left in place. Groups with a file younger than ``min_age`` seconds are
        skipped (a periodic caller should not grab an upload still in progress).
        """
        report = DiscoveryReport()
        by_name: dict[str, list[ObjectInfo]] = defaultdict(list)
        for obj in self.backend.list(MODELS):
            parts = obj.key[len(MODELS):].split("/")
            if len(parts) < 2:
                report.unservable.append(UnservableGroup("", [obj.key], "not inside models/<name>/"))
                continue
            by_name[parts[0]].append(obj)
        now = time.time()
        for name, objects in sorted(by_name.items()):
            claimed = self._versions_in(name, objects, CLAIM)
            done = self._versions_in(name, objects, MANIFEST_NAME)
            removed = self._versions_in(name, objects, REMOVED)
            report.incomplete.extend(f"{name}:{v}" for v in sorted(claimed - done - removed))
            groups: dict[str, list[ObjectInfo]] = defaultdict(list)
            for obj in objects:
                rest = obj.key[len(MODELS) + len(name) + 1:].split("/")
                if rest[0].startswith(".") or (rest[0].isdigit() and int(rest[0]) in claimed | done):
                    continue
                groups[rest[0] + "/" if rest[0].isdigit() and len(rest) > 1 else ""].append(obj)
            for sub, group in sorted(groups.items()):
                keys = sorted(o.key for o in group)
                if not re.match(r"^[a-z0-9][a-z0-9_-]{0,62}$", name):
                    report.unservable.append(UnservableGroup(name, keys, f"invalid model name '{name}'"))
                    continue
                if any(now - o.mtime < min_age for o in group):
                    report.skipped.append(f"{name}: {len(keys)} file(s) younger than {min_age:g}s")
                    continue
                self._discover_group(name, f"{MODELS}{name}/{sub}", group, report)
        return report

    def _discover_group(self, name: str, root: str, group: list[ObjectInfo], report: DiscoveryReport) -> None:
        import hashlib

        keys = sorted(o.key for o in group)
        digest = hashlib.sha256(json.dumps(sorted((o.key, o.size, o.mtime) for o in group)).encode()).hexdigest()
        with tempfile.TemporaryDirectory(prefix="hydro-discover-") as tmp:
            folder = Path(tmp, "model")
            for obj in group:
                target = folder / safe_relpath(obj.key[len(root):])
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.backend.download(obj.key, target)
                except MissingKey:
                    report.skipped.append(f"{name}: {obj.key} vanished while discovering")
                    return
            framework = detect_framework(folder)
            if framework is None:
                report.unservable.append(UnservableGroup(
                    name, keys, "no template serves these files (framework not recognised); "
                    f"upload them with: hydro model upload PATH --name {name} --framework F"))
                return
            self.backend.prepare_write()
            if not self.backend.write(f"{MODELS}{name}/{DISCOVERY}/{digest}", b"{}", exclusive=True):
                report.skipped.append(f"{name}: {len(keys)} file(s) taken by a concurrent discovery")
                return
            manifest = self.upload(folder, name, framework=framework,
                                   metadata={"discovered_from": [k for k in keys]})
        self.backend.delete(keys)
        report.added.append(manifest)


# ---- opening a store --------------------------------------------------------------------------


def default_store_url() -> str:
    """HYDRO_STORE, else a directory under HYDRO_HOME (or the user's data directory)."""
    env = os.environ.get("HYDRO_STORE")
    if env:
        return env
    return f"file://{hydro_home() / 'store'}"


def hydro_home() -> Path:
    env = os.environ.get("HYDRO_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("hydro"))


def open_store(url: str | None = None) -> ModelStore:
    """A store for ``s3://bucket[/prefix]``, ``file:///dir`` or a plain directory path."""
    url = url or default_store_url()
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not re.match(r"^[A-Za-z0-9._-]{1,255}$", bucket):  # botocore's rule; the server checks the rest
            raise ConfigError(f"invalid bucket name in store URL {url!r}", field="store")
        from hydro_serving.store.s3 import S3Backend

        return ModelStore(S3Backend(bucket, prefix))
    from hydro_serving.store.local import DirectoryBackend

    if url.startswith("file://"):
        rest = url[len("file://"):]
        if not rest:
            raise ConfigError(f"store URL {url!r} names no directory", field="store")
        return ModelStore(DirectoryBackend(Path(rest)))
    if "://" in url:
        raise ConfigError(f"unsupported store URL {url!r}: use s3://bucket[/prefix] or file:///dir", field="store")
    return ModelStore(DirectoryBackend(Path(url)))
