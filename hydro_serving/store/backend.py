"""The small interface the store talks to; S3 and a local directory implement it.

Keys are ``/``-separated paths relative to the store's root (the bucket prefix or the directory).
Only :mod:`hydro_serving.store.store` uses a backend, so nothing else knows which one it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[int], None]
"""Called with the number of bytes moved since the previous call."""


class MissingKey(KeyError):
    """The key does not exist; the store turns it into NotFound with a message in its own words."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch
    etag: str = ""  # S3's ETag (unquoted), a content hash on a directory: changes whenever the object does


class Backend(ABC):
    """Objects under one root. Every method raises StoreError (never a library exception) on I/O failure."""

    url: str

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The object's bytes; MissingKey if absent."""

    @abstractmethod
    def write(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Store ``data`` atomically; with ``exclusive`` only if the key is absent (returns False if not)."""

    @abstractmethod
    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its tag (ETag), for a later :meth:`write_if`; MissingKey if absent."""

    @abstractmethod
    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Compare-and-swap: store ``data`` only if the object still has ``tag`` (``None``: only if absent).

        Returns False, writing nothing, when another writer got there first.
        """

    @abstractmethod
    def uploads_in_progress(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` being written right now (S3 multipart uploads, temporary files)."""

    @abstractmethod
    def upload(self, key: str, source: Path, progress: Progress | None = None) -> None:
        """Store a local file (multipart when large), reporting progress."""

    @abstractmethod
    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        """Write the object to ``dest`` (the caller picks a temporary path and renames); MissingKey if absent."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, recursively, in no promised order."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size, or None if absent."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove objects; absent ones are ignored."""

    @abstractmethod
    def prepare_write(self) -> None:
        """Make the root writable (create the bucket or directory) or raise StoreError saying why not."""
