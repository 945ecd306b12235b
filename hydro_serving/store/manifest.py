"""The manifest: what a stored model version is, written last so a version exists only when complete.

A stored manifest is **untrusted input**: anyone with write access to the bucket can put any JSON
there, and its fields become cache paths, S3 keys and digests. :meth:`Manifest.from_dict`
therefore checks every field before anything uses it and names the field at fault
(``files[0].sha256``), so a crafted ``"sha256": "../../victim.txt"`` is an error, never a path.

Two digests are derived from a manifest (see :mod:`hydro_serving.store.trust`):

* :meth:`Manifest.canonical_bytes` - the whole manifest as canonical JSON (sorted keys, no
  whitespace), computed from the dict that was *stored*, not from a re-serialisation, so any
  change of any field changes it. This is what a signature covers.
* :meth:`Manifest.content_digest` - the model's bytes: sha256 over the sorted
  ``path, size, sha256`` of its files. This is what a deploy pins: it names exactly which bytes a
  replica may load, and stays the same when a version is (re)signed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.errors import HydroError, StoreError
from hydro_serving.store.versions import check_recorded

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
FORMAT_VERSION = 1
ORIGINS = ("upload", "discovery")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
FRAMEWORK_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MAX_PATH = 1024
RESERVED_PATHS = frozenset({MANIFEST_NAME, SIGNATURE_NAME, ".claim", ".removed"})
KNOWN_FIELDS = {"format", "name", "version", "framework", "files", "signature", "metadata", "created_at",
                "training_profile", "origin", "framework_versions"}


def _bad(where: str, fld: str, why: str) -> StoreError:
    return StoreError(f"damaged manifest {where}: field '{fld}' {why}", field=fld)


def check_relpath(rel: Any, where: str = "manifest", fld: str = "path") -> str:
    """A file path of a version: relative, ``/``-separated, inside the version, not a reserved name."""
    if not isinstance(rel, str) or not rel:
        raise _bad(where, fld, "must be a non-empty string")
    parts = rel.split("/")
    if (len(rel) > MAX_PATH or rel.startswith("/") or "\\" in rel or "\x00" in rel
            or any(p in ("", ".", "..") for p in parts)):
        raise _bad(where, fld, f"is not a relative path inside the version: {rel!r}")
    if rel in RESERVED_PATHS:
        raise _bad(where, fld, f"names a file the store reserves: {rel!r}")
    return rel


def check_sha256(value: Any, where: str = "manifest", fld: str = "sha256") -> str:
    if not isinstance(value, str) or not SHA256_RE.match(value):
        raise _bad(where, fld, f"must be 64 lowercase hex digits, got {str(value)[:80]!r}")
    return value


def _check_int(value: Any, where: str, fld: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(where, fld, f"must be an integer >= {minimum}, got {str(value)[:80]!r}")
    return value


@dataclass(frozen=True)
class FileEntry:
    """One file of a model: its path relative to the version directory, size and sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest", fld: str = "files[]") -> FileEntry:
        if not isinstance(data, dict):
            raise _bad(where, fld, "must be an object with path, size and sha256")
        unknown = sorted(set(data) - {"path", "size", "sha256"})
        if unknown:
            raise _bad(where, f"{fld}.{unknown[0]}", "is not a known field")
        for key in ("path", "size", "sha256"):
            if key not in data:
                raise _bad(where, f"{fld}.{key}", "is missing")
        return cls(check_relpath(data["path"], where, f"{fld}.path"),
                   _check_int(data["size"], where, f"{fld}.size", 0),
                   check_sha256(data["sha256"], where, f"{fld}.sha256"))


@dataclass
class Manifest:
    """A model version: name, version, framework, files with sha256, signature, metadata, profile.

    ``origin`` says how the version was created: ``upload`` (someone ran ``hydro model upload``)
    or ``discovery`` (files dropped into the store by another client were adopted).
    """

    name: str
    version: int
    framework: str | None
    files: list[FileEntry]
    signature: Signature | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    training_profile: dict[str, Any] | None = None
    origin: str = "upload"
    framework_versions: dict[str, str] = field(default_factory=dict)  # {package: version} it was trained with
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: exactly the dict that was read, for a parsed manifest."""
        if self.raw is not None:
            return json.loads(json.dumps(self.raw))
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "framework": self.framework,
            "files": [f.to_dict() for f in self.files],
            "signature": self.signature.to_dict() if self.signature is not None else None,
            "metadata": dict(self.metadata),
            "created_at": self.created_at,
            "training_profile": self.training_profile,
            "origin": self.origin,
            # only when known: a manifest without versions keeps the bytes (and digests) it always had
            **({"framework_versions": dict(sorted(self.framework_versions.items()))}
               if self.framework_versions else {}),
        }

    def canonical_bytes(self) -> bytes:
        """Canonical JSON of the whole manifest (sorted keys, compact): what a signature covers."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def manifest_digest(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def content_digest(self) -> str:
        """sha256 over the sorted (path, size, sha256) of the files: the identity of the model's bytes."""
        lines = "".join(f"{f.path}\0{f.size}\0{f.sha256}\n" for f in sorted(self.files, key=lambda f: f.path))
        return hashlib.sha256(lines.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        """Parse and validate a stored manifest; a bad field is a StoreError naming it."""
        if not isinstance(data, dict):
            raise StoreError(f"damaged manifest {where}: not a JSON object", field="(manifest)")
        unknown = sorted(set(data) - KNOWN_FIELDS)
        if unknown:
            raise _bad(where, unknown[0], "is not a known field")
        fmt = data.get("format", FORMAT_VERSION)
        if fmt != FORMAT_VERSION or isinstance(fmt, bool):
            raise _bad(where, "format", f"must be {FORMAT_VERSION}, got {str(fmt)[:40]!r}")
        name = data.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise _bad(where, "name", f"is not a valid model name: {str(name)[:80]!r}")
        version = _check_int(data.get("version"), where, "version", 1)
        framework = data.get("framework")
        if framework is not None and not (isinstance(framework, str) and FRAMEWORK_RE.match(framework)):
            raise _bad(where, "framework", f"is not a valid framework name: {str(framework)[:80]!r}")
        files_raw = data.get("files")
        if not isinstance(files_raw, list) or not files_raw:
            raise _bad(where, "files", "must be a non-empty list")
        files = [FileEntry.from_dict(f, where, f"files[{i}]") for i, f in enumerate(files_raw)]
        seen: set[str] = set()
        for i, f in enumerate(files):
            if f.path in seen:
                raise _bad(where, f"files[{i}].path", f"repeats {f.path!r}")
            seen.add(f.path)
        for i, f in enumerate(files):  # a file cannot also be a directory of another (a/b beside a)
            if any(other.startswith(f.path + "/") for other in seen):
                raise _bad(where, f"files[{i}].path", f"is both a file and a directory: {f.path!r}")
        signature_raw = data.get("signature")
        try:
            signature = Signature.from_dict(signature_raw, "signature") if signature_raw else None
        except HydroError as exc:
            raise StoreError(f"damaged manifest {where}: {exc.message}", field=exc.field or "signature") from exc
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise _bad(where, "metadata", "must be an object")
        created_at = data.get("created_at") or ""
        if not isinstance(created_at, str):
            raise _bad(where, "created_at", "must be a string")
        profile = data.get("training_profile")
        if profile is not None and not isinstance(profile, dict):
            raise _bad(where, "training_profile", "must be an object or null")
        origin = data.get("origin")
        if origin is None:  # manifests written before origins were recorded
            origin = "discovery" if "discovered_from" in metadata else "upload"
        if origin not in ORIGINS:
            raise _bad(where, "origin", f"must be one of {', '.join(ORIGINS)}, got {str(origin)[:40]!r}")
        versions = check_recorded(data.get("framework_versions") or {}, where)
        return cls(name=name, version=version, framework=framework, files=files, signature=signature,
                   metadata=dict(metadata), created_at=created_at, training_profile=profile, origin=origin,
                   framework_versions=versions, raw=data)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str = "manifest") -> Manifest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise StoreError(f"damaged manifest {where}: not JSON ({exc})", field="(manifest)") from exc
        return cls.from_dict(data, where)

    def sealed(self) -> Manifest:
        """This manifest as it will be stored and read back (``raw`` set), so digests match a reader's."""
        return Manifest.from_json(self.to_json(), self.ref)
