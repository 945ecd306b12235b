"""Deployed functions and API keys kept in SQLite, so a restarted gateway knows both.

Only the admin API writes here (deploy, update, remove, keys); the request path never touches the
database, it reads the in-memory pools and key ring built from it at start.

The state directory is the gateway's alone: it is made 0700 and the database 0600 (SQLite gives
its ``-wal``/``-shm`` files the database's mode), so no other user, and no sandboxed replica, reads it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydro_serving.errors import InsufficientStorage

SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name        TEXT PRIMARY KEY,
    deployment  TEXT NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
)
"""

# API keys: only the sha256 of each secret is kept (``digest``), never the secret itself
KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    digest      TEXT NOT NULL,
    functions   TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL,
    revoked_at  REAL,
    internal    INTEGER NOT NULL DEFAULT 0
)
"""
# invocations per function, so INVOCATIONS survives a gateway restart; written in batches by the
# gateway's flusher (never on the request path), removed with the function
COUNTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocation_counts (
    name        TEXT PRIMARY KEY,
    count       INTEGER NOT NULL
)
"""
KEY_COLUMNS = "id, name, digest, functions, created_at, expires_at, revoked_at, internal"


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700: the state directory is the gateway's only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


@contextlib.contextmanager
def full_disk_is_507(state_dir: Path, consequence: str) -> Iterator[None]:
    """A write to the gateway's SQLite state that fails on a full disk becomes one clear 507 naming ``state``.

    Shared by every table of ``gateway.db`` (functions, counts, async calls); other database errors propagate.
    """
    try:
        yield
    except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
        full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "full" in str(exc).lower()
        if not full:
            raise
        raise InsufficientStorage(f"the gateway's state directory {state_dir} is full; {consequence}",
                                  field="state") from None


@dataclass(frozen=True)
class StoredFunction:
    name: str
    deployment: dict[str, Any]  # the normalised deployment JSON, with "hydro" = FunctionSpec.to_dict()
    generation: int
    created_at: float
    updated_at: float


class StateStore:
    """A tiny repository over one SQLite file (``<state>/gateway.db``)."""

    def __init__(self, state_dir: Path) -> None:
        make_private_dir(state_dir)
        self.path = state_dir / "gateway.db"
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        for path in (self.path, self.path.with_name("gateway.db-wal"), self.path.with_name("gateway.db-shm")):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o600)  # a state directory from an older gateway had them 0644
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.execute(KEYS_SCHEMA)
        self._db.execute(COUNTS_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def all(self) -> list[StoredFunction]:
        rows = self._db.execute(
            "SELECT name, deployment, generation, created_at, updated_at FROM functions ORDER BY name").fetchall()
        return [StoredFunction(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in rows]

    def get(self, name: str) -> StoredFunction | None:
        row = self._db.execute(
            "SELECT name, deployment, generation, created_at, updated_at FROM functions WHERE name = ?",
            (name,)).fetchone()
        return StoredFunction(row[0], json.loads(row[1]), row[2], row[3], row[4]) if row else None

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """A write that fails on a full disk is a clear 507; SQLite's transaction leaves the file as it was."""
        return full_disk_is_507(self.path.parent, "free space and retry (nothing was changed)")

    def put(self, name: str, deployment: dict[str, Any], generation: int) -> StoredFunction:
        """Insert or replace; ``created_at`` survives updates."""
        now = time.time()
        with self._writing():
            self._put(name, deployment, generation, now)
        stored = self.get(name)
        assert stored is not None
        return stored

    def _put(self, name: str, deployment: dict[str, Any], generation: int, now: float) -> None:
        self._db.execute(
            "INSERT INTO functions (name, deployment, generation, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET deployment = excluded.deployment, generation = excluded.generation, "
            "updated_at = excluded.updated_at",
            (name, json.dumps(deployment, sort_keys=True), generation, now, now))

    def delete(self, name: str) -> bool:
        with self._writing():
            self._db.execute("DELETE FROM invocation_counts WHERE name = ?", (name,))
            return self._db.execute("DELETE FROM functions WHERE name = ?", (name,)).rowcount > 0

    # ---- invocation counts (batched by the gateway: one transaction per flush) ----------------------------

    def invocation_counts(self) -> dict[str, int]:
        return {str(name): int(count) for name, count in
                self._db.execute("SELECT name, count FROM invocation_counts").fetchall()}

    def save_invocation_counts(self, counts: dict[str, int]) -> None:
        """Write the given functions' totals in one transaction (only functions still stored are kept)."""
        if not counts:
            return
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO invocation_counts (name, count) SELECT ?, ? WHERE EXISTS "
                    "(SELECT 1 FROM functions WHERE name = ?) "
                    "ON CONFLICT(name) DO UPDATE SET count = excluded.count",
                    [(name, count, name) for name, count in counts.items()])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- API keys (rows as tuples in KEY_COLUMNS order; hydro_serving.gateway.keys gives them meaning) ----

    def all_keys(self) -> list[tuple[Any, ...]]:
        return self._db.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name").fetchall()

    def put_key(self, row: tuple[Any, ...]) -> None:
        """Insert a key, replacing an inactive one of the same name (the caller checked it is inactive)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM api_keys WHERE name = ?", (row[1],))
            self._db.execute(f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def revoke_key(self, key_id: str, when: float) -> None:
        self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (when, key_id))

    def delete_key(self, key_id: str) -> None:
        self._db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
