"""The manifest: what a stored model version is, written last so a version exists only when complete."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.errors import StoreError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    """One file of a model: its path relative to the version directory, size and sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileEntry:
        return cls(str(data["path"]), int(data["size"]), str(data["sha256"]))


@dataclass
class Manifest:
    """A model version: name, version, framework, files with sha256, signature, metadata, profile."""

    name: str
    version: int
    framework: str | None
    files: list[FileEntry]
    signature: Signature | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    training_profile: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse a stored manifest; a damaged one is a StoreError (the store, not the caller, is wrong)."""
        try:
            signature = data.get("signature")
            return cls(
                name=str(data["name"]),
                version=int(data["version"]),
                framework=data.get("framework"),
                files=[FileEntry.from_dict(f) for f in data["files"]],
                signature=Signature.from_dict(signature) if signature else None,
                metadata=dict(data.get("metadata") or {}),
                created_at=str(data.get("created_at") or ""),
                training_profile=data.get("training_profile"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"damaged manifest: {exc!r}") from exc

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str = "manifest") -> Manifest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"damaged manifest {where}: not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise StoreError(f"damaged manifest {where}: not a JSON object")
        return cls.from_dict(data)
