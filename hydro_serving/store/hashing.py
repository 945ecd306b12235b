"""sha256 of files, streamed in chunks so a multi-gigabyte model never sits in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1024 * 1024


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safe_relpath(rel: str) -> str:
    """A manifest path must stay inside its version directory (a stored manifest is not trusted)."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        from hydro_serving.errors import StoreError

        raise StoreError(f"refusing manifest path outside the model directory: {rel!r}")
    return rel
