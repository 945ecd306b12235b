"""ModelStore: versioned models over a Backend (S3 or a directory), the one class callers use.

Layout under the store root (bucket prefix or directory)::

    models/<name>/<version>/.claim            claimed with an exclusive create; never deleted
    models/<name>/<version>/<model files>     as uploaded (a file, or a directory's tree)
    models/<name>/<version>/manifest.sig      ed25519 signature of the manifest (optional, see .trust)
    models/<name>/<version>/manifest.json     written last: a version exists iff this exists
    models/<name>/<version>/.removed          left by ``remove`` beside the claim (a tombstone)
    models/<name>/.aliases/<alias>.json       {"version": N} or {"removed": true}; ``latest`` is implicit
    models/<name>/.discovery/pending-<id>     what discovery saw of a group of foreign files, and when
    models/<name>/.discovery/<digest>         marks a group of foreign files as taken by discovery

Alias moves and removals are compare-and-swap (:meth:`Backend.write_if`: ``If-Match`` on S3, a
locked compare-and-rename on a directory), and an alias is removed by overwriting it with a
tombstone, never by a delete that could race a concurrent move. ``remove`` marks the version
``.removed`` *before* checking aliases, and ``set_alias`` checks the mark *after* writing, so a
concurrent move and removal can never leave an alias naming a removed version.

Why a claim object: two uploads of one name race for the next number; the exclusive create
(S3 ``If-None-Match: *``, ``O_EXCL`` on disk) lets exactly one win each number, the other
retries with the next. The claim stays after a ``remove`` as a tombstone, so a number is never
reused and a cache keyed by ``name:version`` can never serve the wrong model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
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
from hydro_serving.errors import ConfigError, Conflict, NotFound, StoreError, UntrustedModelError, ValidationError
from hydro_serving.store.backend import Backend, MissingKey, ObjectInfo
from hydro_serving.store.declared import METADATA_KEY, check_signature, declared_inputs
from hydro_serving.store.frameworks import detect_framework
from hydro_serving.store.hashing import safe_relpath, sha256_file
from hydro_serving.store.manifest import MANIFEST_NAME, ORIGINS, SIGNATURE_NAME, FileEntry, Manifest, check_relpath
from hydro_serving.store.profile import profile_csv
from hydro_serving.store.refs import LATEST, ModelRef, check_alias, check_name, check_version, parse_ref
from hydro_serving.store.signature_file import load_signature_file, signature_from_data
from hydro_serving.store.trust import PICKLE_SUFFIXES, Pin, SigningKey, TrustPolicy
from hydro_serving.store.versions import check_recorded, detect_versions

MODELS = "models/"
CLAIM = ".claim"
REMOVED = ".removed"
ALIASES = ".aliases"
DISCOVERY = ".discovery"
RESERVED = {MANIFEST_NAME, SIGNATURE_NAME, CLAIM, REMOVED}
MAX_CLAIM_ATTEMPTS = 1000
CAS_ATTEMPTS = 200
MAX_SIGNATURE_BYTES = 16384
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
log = logging.getLogger("hydro.store")
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
        """Complete versions of ``name`` (a manifest, no removal mark), ascending; NotFound when there is none."""
        check_name(name)
        objects = self._scan(name)
        found = sorted(self._versions_in(name, objects, MANIFEST_NAME) - self._versions_in(name, objects, REMOVED))
        if not found:
            raise NotFound(f"unknown model '{name}' in {self.url}", field="name")
        return found

    def _alias_key(self, name: str, alias: str) -> str:
        return f"{MODELS}{name}/{ALIASES}/{alias}.json"

    @staticmethod
    def _alias_target(raw: bytes) -> int | None:
        """The version an alias object names; None for a tombstone; ValueError when damaged."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if data.get("removed") is True:
            return None
        version = data["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"bad version {version!r}")
        return version

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for ``name`` (``latest`` not included: it is implicit)."""
        check_name(name)
        out: dict[str, int] = {}
        prefix = f"{MODELS}{name}/{ALIASES}/"
        for obj in self.backend.list(prefix):
            alias = obj.key[len(prefix):].removesuffix(".json")
            try:
                target = self._alias_target(self.backend.read(obj.key))
            except (MissingKey, ValueError, KeyError, TypeError, ValidationError):
                continue  # removed meanwhile, or damaged: an alias that resolves to nothing
            if target is not None:
                out[alias] = target
        return dict(sorted(out.items()))

    def resolve(self, ref: str | ModelRef) -> tuple[str, int]:
        """``name[:version|alias]`` -> (name, version) of a complete version, or NotFound."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.version is not None:
            return parsed.name, parsed.version
        if parsed.alias == LATEST:
            return parsed.name, self.versions(parsed.name)[-1]
        key = self._alias_key(parsed.name, str(parsed.alias))
        try:
            raw = self.backend.read(key)
        except MissingKey:
            raw = None
        try:
            target = self._alias_target(raw) if raw is not None else None
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise StoreError(f"damaged alias object {key}", field="alias") from exc
        if target is None:
            self.versions(parsed.name)  # NotFound for the model itself first
            raise NotFound(f"model '{parsed.name}' has no alias '{parsed.alias}'", field="ref")
        return parsed.name, target

    def _read_manifest(self, name: str, version: int) -> Manifest:
        try:
            raw = self.backend.read(_version_dir(name, version) + MANIFEST_NAME)
        except MissingKey:
            try:
                have = ", ".join(map(str, self.versions(name)))
            except NotFound:
                raise NotFound(f"unknown model '{name}' in {self.url}", field="name") from None
            raise NotFound(f"model '{name}' has no version {version} (versions: {have})", field="version") from None
        if self.backend.size(_version_dir(name, version) + REMOVED) is not None:
            raise NotFound(f"model '{name}' version {version} was removed", field="version")
        manifest = Manifest.from_json(raw, where=f"{name}:{version}")
        if (manifest.name, manifest.version) != (name, version):
            raise StoreError(f"damaged manifest {name}:{version}: it describes {manifest.ref}", field="name")
        return manifest

    def get_manifest(self, ref: str | ModelRef) -> Manifest:
        """The validated manifest of a version; ``latest`` skips a damaged newest version with a warning."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.version is None and parsed.alias == LATEST:
            versions = self.versions(parsed.name)
            for version in reversed(versions):
                try:
                    return self._read_manifest(parsed.name, version)
                except StoreError as exc:
                    if "damaged" not in exc.message:
                        raise  # the store cannot be read: not a damaged version
                    log.warning("%s:%s is damaged (%s); 'latest' skips it (remove it with: hydro model rm %s:%s)",
                                parsed.name, version, exc.message, parsed.name, version)
            raise StoreError(f"every version of '{parsed.name}' has a damaged manifest", field="name")
        name, version = self.resolve(parsed)
        return self._read_manifest(name, version)

    def get_signature(self, name: str, version: int) -> bytes | None:
        """The ``manifest.sig`` object of a version, or None when it is not signed."""
        key = _version_dir(name, version) + SIGNATURE_NAME
        try:
            raw = self.backend.read(key)
        except MissingKey:
            return None
        if len(raw) > MAX_SIGNATURE_BYTES:
            raise StoreError(f"{name}:{version}: {SIGNATURE_NAME} is too large to be a signature", field="signature")
        return raw

    def trusted_manifest(self, ref: str | ModelRef, policy: TrustPolicy | None = None) -> Manifest:
        """Resolve ``ref`` and check it against ``policy`` (default: the environment's) before any file moves.

        With a pin the pinned version is resolved whatever ``ref`` names (an alias may have moved
        since the deploy). Raises UntrustedModelError when the policy refuses the version.
        """
        policy = policy if policy is not None else TrustPolicy.from_env()
        if policy.pin is not None:
            parsed = parse_ref(ref) if isinstance(ref, str) else ref
            if parsed.name != policy.pin.name:
                raise UntrustedModelError(f"the deploy pinned {policy.pin}, but the function asks for {parsed}",
                                     field="model")
            ref = ModelRef(policy.pin.name, version=policy.pin.version)
        manifest = self.get_manifest(ref)
        sig = self.get_signature(manifest.name, manifest.version) if policy.trusted else None
        policy.check(manifest, sig)
        return manifest

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
        sign_key: SigningKey | None = None,
        origin: str = "upload",
        framework_versions: dict[str, str] | None = None,
    ) -> Manifest:
        """Store a model file or directory as the next version of ``name``; returns its manifest.

        Everything that can be wrong with the input is checked before anything is written. Files
        are uploaded, then checked (size in the store, source unchanged since it was hashed), then
        the signature (``sign_key``) and only then the manifest, published atomically and
        exclusively: a failure or a crash at any point leaves no visible version, or a complete one.

        ``framework_versions`` (default: detected from this process, see :mod:`.versions`; none for
        a discovered version, whose trainer is unknown) records what the model was trained with.
        """
        check_name(name)
        if origin not in ORIGINS:
            raise ValidationError(f"origin must be one of {', '.join(ORIGINS)}", field="origin")
        path = Path(path)
        if not path.exists():
            raise ValidationError(f"model path {path} does not exist", field="path")
        files = _collect_files(path)
        for rel, _ in files:
            if rel in RESERVED:
                raise ValidationError(f"{path} contains '{rel}', a name the store reserves; rename it", field="path")
            try:
                check_relpath(rel, str(path))  # what a reader will accept: refuse it now, not after the upload
            except StoreError as exc:
                raise ValidationError(f"{path}: the file name {rel!r} cannot be stored ({exc.message})",
                                      field="path") from None
        if framework is None:
            framework = detect_framework(path)
            if framework is None:
                raise ValidationError(
                    f"cannot tell the framework of {path}; pass --framework "
                    "(sklearn, onnx, spark, tensorflow, xgboost, lightgbm or a custom name)", field="framework")
        elif not _FRAMEWORK_RE.match(framework):
            raise ValidationError(f"invalid framework name {framework!r}", field="framework")
        if framework_versions is None:
            framework_versions = detect_versions(framework) if origin == "upload" else {}
        try:
            versions = check_recorded(framework_versions, str(path))
        except StoreError as exc:
            raise ValidationError(exc.message.replace("damaged manifest ", "", 1), field=exc.field) from None
        sig = self._signature(signature)
        profile = profile_csv(training_data) if training_data is not None else None
        meta = dict(metadata or {})
        meta.pop(METADATA_KEY, None)  # the store's own key: what the model declares, never the caller's word
        if origin == "upload" and (sig is not None or framework != "tensorflow"):  # TF: only to check a signature
            declared = declared_inputs(path, framework)
            check_signature(sig, declared)  # issue 14: a signature the model cannot take is refused now
            if declared is not None:
                meta[METADATA_KEY] = declared.to_dict()  # the gateway checks a stack's signature against it
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
                                metadata=meta, training_profile=profile, origin=origin,
                                framework_versions=versions).sealed()
            if sign_key is not None:
                written.append(base + SIGNATURE_NAME)
                self.backend.write(base + SIGNATURE_NAME, sign_key.sign(manifest))
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

    def sign(self, ref: str | ModelRef, key: SigningKey) -> Manifest:
        """Sign an existing version: write ``manifest.sig`` for its manifest as stored now."""
        manifest = self.get_manifest(ref)
        self.backend.write(_version_dir(manifest.name, manifest.version) + SIGNATURE_NAME, key.sign(manifest))
        return manifest

    def _cas_alias(self, name: str, alias: str, body_for: Callable[[int | None], bytes | None]) -> int | None:
        """Compare-and-swap loop on one alias object; ``body_for(current)`` returns the new body (None: stop).

        Returns the version the alias named before the successful write.
        """
        key = self._alias_key(name, alias)
        for attempt in range(CAS_ATTEMPTS):
            try:
                raw, tag = self.backend.read_tagged(key)
            except MissingKey:
                raw, tag = None, None
            try:
                current = self._alias_target(raw) if raw is not None else None
            except (ValueError, KeyError, TypeError):
                current = None  # a damaged alias object is overwritten (still conditionally)
            body = body_for(current)
            if body is None:
                return current
            if self.backend.write_if(key, body, tag):
                return current
            time.sleep(min(0.2, 0.002 * (attempt + 1)))  # lost the race: read again and retry
        raise Conflict(f"alias '{alias}' of '{name}' is being changed by others; try again", field="alias")

    def _is_removed(self, name: str, version: int) -> bool:
        base = _version_dir(name, version)
        return self.backend.size(base + REMOVED) is not None or self.backend.size(base + MANIFEST_NAME) is None

    def set_alias(self, name: str, version: int, alias: str) -> None:
        """Point ``alias`` at an existing version (moving it if it pointed elsewhere), compare-and-swap."""
        check_name(name)
        version = check_version(version)
        if alias == LATEST:
            raise ValidationError("'latest' is implicit (the highest version) and cannot be set", field="alias")
        check_alias(alias)
        self.get_manifest(ModelRef(name, version=version))  # NotFound unless the version exists
        nonce = uuid.uuid4().hex  # makes every write's ETag distinct, so a stale If-Match never matches
        body = json.dumps({"version": version, "at": time.time(), "nonce": nonce}).encode()
        previous = self._cas_alias(name, alias, lambda _current: body)
        if self._is_removed(name, version):
            # a removal ran concurrently and did not see this alias: undo the move if it is still ours
            def undo(current: int | None) -> bytes | None:
                if current != version:
                    return None
                if previous is None:
                    return json.dumps({"removed": True, "at": time.time(), "nonce": uuid.uuid4().hex}).encode()
                return json.dumps({"version": previous, "at": time.time(), "nonce": uuid.uuid4().hex}).encode()

            self._cas_alias(name, alias, undo)
            raise NotFound(f"{name}:{version} was removed while the alias was being set", field="version")

    def remove_alias(self, name: str, alias: str, *, only_if: int | None = None) -> None:
        """Remove an alias (a conditional overwrite with a tombstone); ``only_if``: while it names that version."""
        check_name(name)
        check_alias(alias)
        tombstone = json.dumps({"removed": True, "at": time.time(), "nonce": uuid.uuid4().hex}).encode()

        def body(current: int | None) -> bytes | None:
            if current is None or (only_if is not None and current != only_if):
                return None
            return tombstone

        if self._cas_alias(name, alias, body) is None and only_if is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'", field="alias")

    def remove(self, name: str, version: int, *, force: bool = False,
               pinned_by: dict[str, str] | None = None) -> list[str]:
        """Delete a version; refuse while an alias points at it or a deployed function pins it, unless ``force``.

        ``pinned_by`` maps deployed function names to their pins (``name:version@sha256:...``), as
        the caller learnt them from the gateway. A version whose manifest is damaged or empty can
        always be removed. Returns the aliases removed with it (``force``). The version is marked
        ``.removed`` before the aliases are checked (see the module docstring), then its manifest
        disappears, then its files.
        """
        check_name(name)
        version = check_version(version)
        base = _version_dir(name, version)
        present = {o.key for o in self.backend.list(base)}
        if base + MANIFEST_NAME not in present:
            if base + CLAIM in present and len(present - {base + CLAIM, base + REMOVED}) > 0:
                pass  # an upload that never finished: its leftovers can be removed
            else:
                self._read_manifest(name, version)  # NotFound in the store's words
        pins = [fn for fn, pin in sorted((pinned_by or {}).items()) if pin.split("@", 1)[0] == f"{name}:{version}"]
        if pins and not force:
            raise Conflict(f"{name}:{version} is pinned by deployed function(s) {', '.join(pins)}; redeploy them "
                           "on another version first, or pass --force", field="version")
        self.backend.write(base + REMOVED, json.dumps({"at": time.time()}).encode())
        pointing = [a for a, v in self.aliases(name).items() if v == version]
        if pointing and not force:
            self.backend.delete([base + REMOVED])
            raise Conflict(f"{name}:{version} is aliased as {', '.join(pointing)}; move the alias first, "
                           "or pass --force", field="version")
        for alias in pointing:
            self.remove_alias(name, alias, only_if=version)
        self.backend.delete([base + MANIFEST_NAME, base + SIGNATURE_NAME])
        keep = (base + CLAIM, base + REMOVED)
        rest = [o.key for o in self.backend.list(base) if o.key not in keep]
        self.backend.delete(rest)
        return pointing

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

    def discover(self, min_age: float = 0.0, *, allow_unsafe: bool = False, now: float | None = None
                 ) -> DiscoveryReport:
        """Turn files put under ``models/<name>/`` by other clients into versions, once they are finished.

        Foreign files of one name form one group (a foreign numeric folder ``models/<name>/7/``
        without a claim is its own group). A group becomes a version only when it is *settled*:
        its set of files (keys, sizes, ETags) was recorded by an earlier scan at least ``min_age``
        seconds ago and is unchanged now, and the store reports no upload in progress under it
        (S3 multipart uploads; temporary files on a directory). The record lives in the store
        (``.discovery/pending-<id>``), so scans by different processes and gateways agree, and
        the version is claimed with the same exclusive write as uploads, so two gateways never
        publish one drop twice. ``min_age=0`` makes one call scan twice.

        A settled group whose framework is detected is uploaded through :meth:`upload` with
        ``origin: discovery`` and its original objects are then deleted (discovery *moves*
        files). Pickle-based files (joblib, pickle, ...) are code: such a group is left in place
        and reported unless ``allow_unsafe`` (``hydro gateway --discover-unsafe-formats``).
        """
        passes = 2 if min_age <= 0 else 1
        report = DiscoveryReport()
        for i in range(passes):
            report = self._discover_pass(min_age, allow_unsafe, now, report.added if i else [])
        return report

    def _discover_pass(self, min_age: float, allow_unsafe: bool, now: float | None,
                       added: list[Manifest]) -> DiscoveryReport:
        report = DiscoveryReport(added=list(added))
        by_name: dict[str, list[ObjectInfo]] = defaultdict(list)
        for obj in self.backend.list(MODELS):
            if obj.key.endswith("/"):
                continue  # a "folder" marker some S3 consoles create: not a file
            parts = obj.key[len(MODELS):].split("/")
            if len(parts) < 2:
                report.unservable.append(UnservableGroup("", [obj.key], "not inside models/<name>/"))
                continue
            by_name[parts[0]].append(obj)
        now = time.time() if now is None else now
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
                root = f"{MODELS}{name}/{sub}"
                pickles = [k for k in keys if k.lower().endswith(PICKLE_SUFFIXES)]
                if pickles and not allow_unsafe:
                    report.unservable.append(UnservableGroup(name, keys, _PICKLE_REFUSED.format(name=name)))
                    continue
                if not self._settled(name, root, group, min_age, now, report):
                    continue
                self._discover_group(name, root, group, report, allow_unsafe)
        return report

    def _settled(self, name: str, root: str, group: list[ObjectInfo], min_age: float, now: float,
                 report: DiscoveryReport) -> bool:
        """Record what this scan saw of a group; True when an earlier scan saw the same, long enough ago."""
        digest = _group_digest(group)
        in_progress = self.backend.uploads_in_progress(root)
        if root == f"{MODELS}{name}/":  # the loose files of a name: not uploads into numbered folders
            in_progress = [k for k in in_progress
                           if not (k[len(root):].split("/")[0].isdigit() or k[len(root):].startswith("."))]
        if in_progress:
            report.skipped.append(f"{name}: upload in progress ({', '.join(sorted(in_progress)[:3])})")
            return False
        key = f"{MODELS}{name}/{DISCOVERY}/pending-{hashlib.sha256(root.encode()).hexdigest()[:16]}.json"
        try:
            raw, tag = self.backend.read_tagged(key)
            seen = json.loads(raw)
            first_seen = float(seen["first_seen"]) if seen.get("digest") == digest else None
        except MissingKey:
            tag, first_seen = None, None
        except (ValueError, KeyError, TypeError, AttributeError):
            tag, first_seen = None, None
            self.backend.delete([key])  # damaged: start over
        if first_seen is None:
            self.backend.prepare_write()
            self.backend.write_if(key, json.dumps({"digest": digest, "first_seen": now}).encode(), tag)
            report.skipped.append(f"{name}: {len(group)} file(s) seen for the first time; waiting for them to "
                                  f"stay unchanged for {min_age:g}s")
            return False
        if now - first_seen < min_age:
            report.skipped.append(f"{name}: {len(group)} file(s) unchanged for {now - first_seen:.0f}s of "
                                  f"{min_age:g}s")
            return False
        return True

    def _discover_group(self, name: str, root: str, group: list[ObjectInfo], report: DiscoveryReport,
                        allow_unsafe: bool) -> None:
        keys = sorted(o.key for o in group)
        digest = _group_digest(group)
        try:
            for obj in group:
                check_relpath(obj.key[len(root):], f"{name} (discovery)", obj.key)
        except StoreError as exc:  # a key no version could hold ('..', '//', a reserved name): report it
            report.unservable.append(UnservableGroup(name, keys, exc.message))
            return
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
            if not allow_unsafe and any(_looks_like_pickle(p) for p in folder.rglob("*") if p.is_file()):
                report.unservable.append(UnservableGroup(name, keys, _PICKLE_REFUSED.format(name=name)))
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
            manifest = self.upload(folder, name, framework=framework, origin="discovery",
                                   metadata={"discovered_from": [k for k in keys]})
        self.backend.delete(keys)
        report.added.append(manifest)


_PICKLE_REFUSED = ("pickle-based files (joblib, pickle) are code and are not adopted from files dropped into the "
                   "store; upload them with: hydro model upload PATH --name {name} --sign KEY, convert them to "
                   "a safe format (ONNX, skops), or run the gateway with --discover-unsafe-formats")


def _group_digest(group: list[ObjectInfo]) -> str:
    """The identity of a set of files: keys, sizes and ETags (any change of any file changes it)."""
    return hashlib.sha256(json.dumps(sorted((o.key, o.size, o.etag) for o in group)).encode()).hexdigest()


def _looks_like_pickle(path: Path) -> bool:
    """A pickle by content whatever its name (protocol 2+ starts with 0x80 and the protocol number)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return head in PICKLE_MAGIC or path.name.lower().endswith(PICKLE_SUFFIXES)


# ---- deploys -----------------------------------------------------------------------------------


def pin_model(ref: str, policy: TrustPolicy | None = None, store_url: str | None = None) -> Pin:
    """What a deploy of ``model: ref`` pins: ``name:version@sha256:<content digest>``, trust checked.

    The gateway calls it when it resolves a deploy; UntrustedModelError (403) when the policy (default:
    trusted keys from the environment) refuses the version that ``ref`` resolves to.
    """
    manifest = open_store(store_url).trusted_manifest(ref, policy if policy is not None else TrustPolicy.from_env())
    return Pin.of(manifest)


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
