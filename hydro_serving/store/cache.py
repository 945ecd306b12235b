"""The local model cache: ``fetch_model("name:3")`` -> a directory with the model's files.

Layout under ``HYDRO_CACHE`` (default: :func:`default_cache_dir`, ``$XDG_CACHE_HOME/hydro/models``)::

    blobs/<sha256>                          verified file contents, shared by every version
    models/<store-id>/<name>/<version>/     the model's files as uploaded (hard links to blobs)
    models/<store-id>/<name>/<version>.state.json   what was verified, and the stat of each file
    refs/<store-id>/<name>/<alias>.json     the version an alias (or latest) last resolved to
    locks/, tmp/                            per-version flock; downloads before their rename

Why it is shaped like this:

* **Pinned versions never touch the store once cached.** Versions are immutable and numbers are
  never reused (see :mod:`.store`), so ``name:3`` found in the cache is answered from disk: a
  cold start works with S3 down.
* **Cheap corruption check.** Every start of a function fetches its model; re-hashing gigabytes
  each time would dominate cold starts. At verification we record each file's size, mtime,
  ctime and inode; a start compares those with ``os.stat`` (one call per file). Any difference
  (a write in place changes mtime and ctime, ctime cannot be set back by users) triggers a full
  sha256 of that file; a mismatch re-downloads it. A change that keeps all four identical is not
  detected - that needs bypassing the file system.
* **Shared by replicas.** Downloads go to ``tmp/`` and are renamed into ``blobs/`` only after
  their sha256 matched; trees are built in ``tmp/`` and renamed into place; a per-version file
  lock keeps two replicas of one function from downloading the same model twice.
* **Aliases need the store**, but when it is unreachable the last resolution recorded in
  ``refs/`` is used with a logged warning, so a restart with S3 down still serves.
* **A provider may hand a replica one pinned version read-only** (``HYDRO_CACHE_SEED``: a cache
  root holding only ``models/<store-id>/<name>/<version>/`` and its state file, e.g. the gateway's
  entry mounted into a container). It is consulted first for the deploy's pin, with the same trust
  and integrity checks, so a new container serves a version the gateway cached with the store down.
* **Trust is checked before a byte moves** (:class:`~hydro_serving.store.trust.TrustPolicy`, read
  from ``HYDRO_TRUSTED_KEYS`` and ``HYDRO_MODEL_PIN``): a pinned deploy fetches exactly the pinned
  version and refuses other bytes; with trusted keys an unsigned or foreign-signed manifest is
  refused. A cached version is re-checked against the manifest and signature recorded with it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydro_serving.errors import StoreError, UntrustedModelError
from hydro_serving.store.hashing import safe_relpath, sha256_file
from hydro_serving.store.manifest import Manifest
from hydro_serving.store.refs import ModelRef, parse_ref
from hydro_serving.store.store import ModelStore, default_store_url, hydro_home, open_store
from hydro_serving.store.trust import TrustPolicy

log = logging.getLogger(__name__)
LOCK_TIMEOUT = 900.0
SEED_ENV = "HYDRO_CACHE_SEED"  # a read-only cache root with the deploy's pinned version (set by a provider only)


def default_cache_dir() -> Path:
    """``HYDRO_CACHE``; else ``$HYDRO_HOME/cache`` when HYDRO_HOME is set; else the user's cache directory.

    The user's cache directory is ``$XDG_CACHE_HOME/hydro/models`` (``~/.cache/hydro/models``):
    a cache is what backup tools and ``rm -rf ~/.cache`` are told they may drop, and these files
    can be fetched again. Older versions kept it under the data directory
    (``$XDG_DATA_HOME/hydro/cache``); that folder is moved to the new place once, on first use
    (one rename, atomic; when it cannot be moved, e.g. across file systems, it is used where it is).
    """
    env = os.environ.get("HYDRO_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("HYDRO_HOME"):
        return hydro_home() / "cache"
    import platformdirs

    new = Path(platformdirs.user_cache_dir("hydro")) / "models"
    old = Path(platformdirs.user_data_dir("hydro")) / "cache"
    if new.exists() or not old.is_dir():
        return new
    try:
        new.parent.mkdir(parents=True, exist_ok=True)
        os.rename(old, new)
    except FileNotFoundError:  # another process moved it first
        return new
    except OSError as exc:
        if new.exists():  # another process moved it (or created the new one) meanwhile
            return new
        log.warning("model cache left at its old place %s (cannot move it to %s: %s)", old, new, exc.strerror)
        return old
    log.info("model cache moved from %s to %s", old, new)
    return new


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _atomic_write(path: Path, data: bytes, tmp_dir: Path) -> None:
    tmp = tmp_dir / f"{uuid.uuid4().hex}.json"
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ModelCache:
    """One cache directory, seen through one store URL (the ``store-id`` namespace)."""

    def __init__(self, root: Path, store_url: str) -> None:
        self.root = Path(root)
        self.store_url = store_url
        self.store_id = hashlib.sha256(store_url.encode()).hexdigest()[:16]
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"

    def _dirs(self) -> None:
        try:
            for d in (self.blobs, self.tmp, self.locks):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the model cache in {self.root}: {exc.strerror or exc}") from exc

    def tree(self, name: str, version: int) -> Path:
        return self.root / "models" / self.store_id / name / str(version)

    def _state_path(self, name: str, version: int) -> Path:
        return self.root / "models" / self.store_id / name / f"{version}.state.json"

    def _ref_path(self, name: str, alias: str) -> Path:
        return self.root / "refs" / self.store_id / name / f"{alias}.json"

    # ---- the fast path -----------------------------------------------------------------------

    def ready(self, name: str, version: int) -> Path | None:
        """The cached tree if every file is intact, else None (absent, or corrupt: needs repair).

        Costs one ``stat`` per file when nothing changed; re-hashes only files whose stat changed.
        """
        state_path = self._state_path(name, version)
        try:
            state = json.loads(state_path.read_bytes())
            files: list[dict[str, Any]] = state["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        tree = self.tree(name, version)
        changed = False
        for item in files:
            path = tree / safe_relpath(item["path"])
            try:
                st = path.stat()
            except OSError:
                return None
            if _stat_key(st) == item["stat"]:
                continue
            if st.st_size != item["size"] or sha256_file(path) != item["sha256"]:
                log.warning("cached %s:%s file %s is corrupt; fetching it again", name, version, item["path"])
                return None
            item["stat"] = _stat_key(path.stat())  # same content, touched: remember the new stat
            changed = True
        if changed:
            with contextlib.suppress(OSError, StoreError):  # a read-only cache (a seed) keeps its old stat
                self._dirs()
                _atomic_write(state_path, json.dumps(state).encode(), self.tmp)
        return tree

    def manifest(self, name: str, version: int) -> Manifest | None:
        """The manifest recorded with a cached version (for callers that need the signature)."""
        try:
            return Manifest.from_dict(json.loads(self._state_path(name, version).read_bytes())["manifest"])
        except (OSError, ValueError, KeyError, TypeError, StoreError):
            return None

    def signature(self, name: str, version: int) -> bytes | None:
        """The ``manifest.sig`` recorded with a cached version, if it was signed when fetched."""
        try:
            sig = json.loads(self._state_path(name, version).read_bytes()).get("signature")
            return base64.b64decode(sig) if isinstance(sig, str) else None
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def trusted(self, name: str, version: int, policy: TrustPolicy) -> Path | None:
        """The cached tree when it is intact and ``policy`` accepts what was recorded with it, else None."""
        manifest = self.manifest(name, version)
        if manifest is None:
            return None
        try:
            policy.check(manifest, self.signature(name, version) if policy.trusted else None)
        except UntrustedModelError:
            return None  # ask the store: the version may have been signed since
        return self.ready(name, version)

    # ---- aliases -----------------------------------------------------------------------------

    def remember(self, name: str, alias: str, version: int) -> None:
        path = self._ref_path(name, alias)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs()
            _atomic_write(path, json.dumps({"version": version, "at": time.time()}).encode(), self.tmp)

    def last_resolved(self, name: str, alias: str) -> int | None:
        try:
            return int(json.loads(self._ref_path(name, alias).read_bytes())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # ---- filling and repairing ---------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, name: str, version: int) -> Iterator[None]:
        self._dirs()
        path = self.locks / f"{self.store_id}-{name}-{version}.lock"
        with open(path, "a+b") as fh:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise StoreError(f"cannot lock {path}: {exc.strerror}") from exc
                    if time.monotonic() > deadline:
                        raise StoreError(f"timed out waiting for another process fetching {name}:{version}"
                                         ) from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _blob(self, store: ModelStore, manifest: Manifest, index: int) -> Path:
        """A verified blob for one file, downloading it unless an intact copy is already here."""
        entry = manifest.files[index]
        blob = self.blobs / entry.sha256
        if blob.is_file():
            if blob.stat().st_size == entry.size and sha256_file(blob) == entry.sha256:
                return blob
            log.warning("cached blob %s is corrupt; fetching it again", entry.sha256[:12])
            blob.unlink(missing_ok=True)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            store.download_file(manifest, entry, tmp)
            os.chmod(tmp, 0o444)  # blobs are shared by hard links: discourage edits in place
            os.replace(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)
        return blob

    @staticmethod
    def _place(blob: Path, target: Path) -> None:
        """Put ``blob`` at ``target`` atomically: a hard link, or a copy across file systems."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            os.link(blob, tmp)
        except OSError:
            shutil.copyfile(blob, tmp)
        os.replace(tmp, target)

    def materialize(self, store: ModelStore, manifest: Manifest, signature: bytes | None = None) -> Path:
        """Build (or repair) the cached tree of a version and record what was verified."""
        name, version = manifest.name, manifest.version
        with self._lock(name, version):
            tree = self.ready(name, version)
            if tree is not None and self.manifest(name, version) == manifest \
                    and (signature is None or self.signature(name, version) == signature):
                return tree  # another process finished it while we waited
            tree = self.tree(name, version)
            try:
                repairing = tree.is_dir()
                build = tree if repairing else self.tmp / f"tree-{uuid.uuid4().hex}"
                files = []
                for i, entry in enumerate(manifest.files):
                    target = build / safe_relpath(entry.path)
                    if repairing and target.is_file() and target.stat().st_size == entry.size \
                            and sha256_file(target) == entry.sha256:
                        pass  # this file is intact
                    else:
                        self._place(self._blob(store, manifest, i), target)
                    files.append({"path": entry.path, "size": entry.size, "sha256": entry.sha256})
                if not repairing:
                    tree.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(build, tree)
                for item in files:
                    item["stat"] = _stat_key((tree / item["path"]).stat())
                state = {"manifest": manifest.to_dict(), "files": files, "store": self.store_url,
                         "verified_at": time.time(),
                         "signature": base64.b64encode(signature).decode() if signature is not None else None}
                _atomic_write(self._state_path(name, version), json.dumps(state).encode(), self.tmp)
            except OSError as exc:
                raise StoreError(f"cannot write the model cache in {self.root}: {exc.strerror or exc}") from exc
            return tree


def fetch_model(ref: str, store_url: str | None = None, cache_dir: Path | None = None,
                policy: TrustPolicy | None = None) -> Path:
    """Resolve ``name[:version|alias]`` and return a local directory holding the model's files.

    ``policy`` (default: from ``HYDRO_TRUSTED_KEYS`` and ``HYDRO_MODEL_PIN``) is checked on the
    manifest before any file is downloaded; a refusal is :class:`UntrustedModelError`. A pinned version
    already cached costs a few ``stat`` calls and no request to the store.
    """
    parsed: ModelRef = parse_ref(ref)
    policy = policy if policy is not None else TrustPolicy.from_env()
    asked_alias = (parsed.alias or "latest") if parsed.version is None else None
    if policy.pin is not None:
        if parsed.name != policy.pin.name:
            raise UntrustedModelError(f"the deploy pinned {policy.pin}, but the function asks for {parsed}",
                                      field="model")
        parsed = ModelRef(policy.pin.name, version=policy.pin.version)
    url = store_url or default_store_url()
    cache = ModelCache(Path(cache_dir) if cache_dir is not None else default_cache_dir(), url)
    if parsed.version is not None:
        tree = _seeded(parsed, url, policy) or cache.trusted(parsed.name, parsed.version, policy)
        if tree is None:
            store = open_store(url)
            manifest = store.trusted_manifest(parsed, policy)
            tree = cache.materialize(store, manifest, store.get_signature(manifest.name, manifest.version))
        if asked_alias is not None:  # an alias the deploy pinned: its resolution is the fallback when S3 is down
            cache.remember(parsed.name, asked_alias, parsed.version)
        return tree
    alias = parsed.alias or "latest"
    try:
        store = open_store(url)
        manifest = store.trusted_manifest(parsed, policy)
    except StoreError as exc:
        last = cache.last_resolved(parsed.name, alias)
        tree = cache.trusted(parsed.name, last, policy) if last is not None else None
        if tree is None:
            raise
        log.warning("store unreachable (%s); using %s:%s, the version %s:%s resolved to last time",
                    exc.message, parsed.name, last, parsed.name, alias)
        return tree
    cache.remember(parsed.name, alias, manifest.version)
    signature = store.get_signature(manifest.name, manifest.version)
    return cache.trusted(manifest.name, manifest.version, policy) or cache.materialize(store, manifest, signature)


def _seeded(ref: ModelRef, store_url: str, policy: TrustPolicy) -> Path | None:
    """The deploy's pinned version from the read-only seed cache (``HYDRO_CACHE_SEED``), if intact and trusted.

    Only for a pin: the seed is the provider's copy of exactly the version the deploy resolved.
    """
    root = os.environ.get(SEED_ENV)
    if not root or policy.pin is None or ref.version is None:
        return None
    try:
        return ModelCache(Path(root), store_url).trusted(ref.name, ref.version, policy)
    except (OSError, StoreError):
        return None


def manifest_of(tree: str | Path) -> Manifest | None:
    """The manifest of a directory returned by :func:`fetch_model` (signature, framework, profile).

    Read from the state file beside the tree, so it costs no request to the store.
    """
    tree = Path(tree)
    try:
        state = json.loads((tree.parent / f"{tree.name}.state.json").read_bytes())
        return Manifest.from_dict(state["manifest"])
    except (OSError, ValueError, KeyError, TypeError, StoreError):
        return None
