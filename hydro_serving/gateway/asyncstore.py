"""Async calls kept in the gateway's SQLite state (``<state>/gateway.db``, table ``async_calls``).

Why the same file as the deployed functions and keys: one state directory to back up, one place the
gateway's durability is argued about. The queue has its own connection (SQLite in WAL mode lets two
connections of one process share the file; writes are short and serialised by SQLite's lock).

Durability: a call is inserted and committed before ``POST /async-function`` answers 202. In WAL
mode with ``synchronous=NORMAL`` (the default here) a committed transaction survives the gateway's
process being killed (SIGKILL, OOM) because it is in the WAL in the kernel's page cache; only a power
loss or kernel crash can lose the last commits. ``HYDRO_ASYNC_FSYNC=1`` makes every commit fsync
(``synchronous=FULL``), which survives that too at the cost of one fsync per state change.

Every row is one call and its whole life: request (method, path, headers, body, callback, who sent
it), status (queued, running, succeeded, failed, dead), attempts, the last response, and the state of
its callback delivery. The queue (:mod:`hydro_serving.gateway.asyncq`) decides; this module only reads
and writes rows, and turns a full disk into a clear 507.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydro_serving.gateway.state import full_disk_is_507

SCHEMA = """
CREATE TABLE IF NOT EXISTS async_calls (
    id                TEXT PRIMARY KEY,
    function          TEXT NOT NULL,
    method            TEXT NOT NULL,
    path              TEXT NOT NULL,
    headers           TEXT NOT NULL,
    body              BLOB NOT NULL,
    callback          TEXT,
    key_id            TEXT,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_at           REAL NOT NULL,
    submitted_at      REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    response_status   INTEGER,
    response_headers  TEXT,
    response_body     BLOB,
    error             TEXT,
    callback_state    TEXT NOT NULL DEFAULT 'none',
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_next_at  REAL,
    callback_status   INTEGER,
    callback_error    TEXT,
    expires_at        REAL
)
"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS async_calls_status ON async_calls (status, function)",
    "CREATE INDEX IF NOT EXISTS async_calls_expiry ON async_calls (expires_at)",
)

STATUSES = ("queued", "running", "succeeded", "failed", "dead")
FINAL = ("succeeded", "failed", "dead")


@dataclass(frozen=True)
class Request:
    """What an attempt needs to call the function again."""

    id: str
    function: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    status: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """The end of one attempt: the function's answer (``status`` None when nothing answered) or an error."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    error: str | None = None
    retry_after: float | None = None


class AsyncStore:
    """Rows of ``async_calls``; every method is one short transaction (called from the event loop)."""

    def __init__(self, state_dir: Path, fsync: bool = False) -> None:
        self.path = state_dir / "gateway.db"  # the StateStore created it (0600, private directory)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute(SCHEMA)
        for statement in INDEXES:
            self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """A full disk is a 507 (nothing stored, so nothing accepted); other database errors propagate."""
        return full_disk_is_507(self.path.parent, "the async call was not accepted")

    # ---- the queue's writes -------------------------------------------------------------------------

    def insert(self, call_id: str, function: str, method: str, path: str, headers: list[tuple[str, str]],
               body: bytes, callback: str | None, key_id: str | None, now: float) -> None:
        with self._writing():
            self._db.execute(
                "INSERT INTO async_calls (id, function, method, path, headers, body, callback, key_id, status, "
                "next_at, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (call_id, function, method, path, json.dumps(headers), body, callback, key_id, now, now))

    def recover(self) -> tuple[list[tuple[str, str, float]], list[tuple[str, float]]]:
        """At start: calls left ``running`` by a crash go back to ``queued`` (they run again: at-least-once).

        Returns the queued calls ``(id, function, next_at)`` in submission order and the callbacks
        still to deliver ``(id, next_at)``.
        """
        with self._writing():
            self._db.execute("UPDATE async_calls SET status = 'queued' WHERE status = 'running'")
        queued = self._db.execute(
            "SELECT id, function, next_at FROM async_calls WHERE status = 'queued' ORDER BY rowid").fetchall()
        callbacks = self._db.execute(
            "SELECT id, COALESCE(callback_next_at, 0) FROM async_calls WHERE callback_state = 'pending' "
            "ORDER BY rowid").fetchall()
        return [(r[0], r[1], r[2]) for r in queued], [(r[0], r[1]) for r in callbacks]

    def request(self, call_id: str) -> Request | None:
        row = self._db.execute(
            "SELECT id, function, method, path, headers, body, status, attempts FROM async_calls WHERE id = ?",
            (call_id,)).fetchone()
        if row is None:
            return None
        return Request(row[0], row[1], row[2], row[3], [tuple(h) for h in json.loads(row[4])], bytes(row[5]),
                       row[6], row[7])

    def start_attempt(self, call_id: str, now: float) -> int:
        """``queued`` -> ``running``, one more attempt; returns the attempt number (0: not queued any more)."""
        with self._writing():
            cur = self._db.execute(
                "UPDATE async_calls SET status = 'running', attempts = attempts + 1, started_at = ? "
                "WHERE id = ? AND status = 'queued' RETURNING attempts", (now, call_id))
            row = cur.fetchone()
        return row[0] if row else 0

    def retry_later(self, call_id: str, outcome: Outcome, next_at: float) -> None:
        with self._writing():
            self._db.execute(
                "UPDATE async_calls SET status = 'queued', next_at = ?, response_status = ?, response_headers = ?, "
                "response_body = ?, error = ? WHERE id = ? AND status = 'running'",
                (next_at, outcome.status, json.dumps(outcome.headers), outcome.body, outcome.error, call_id))

    def finish(self, call_id: str, status: str, outcome: Outcome, now: float, expires_at: float | None,
               callback: bool) -> None:
        with self._writing():
            self._db.execute(
                "UPDATE async_calls SET status = ?, finished_at = ?, response_status = ?, response_headers = ?, "
                "response_body = ?, error = ?, expires_at = ?, callback_state = ?, callback_next_at = ?, "
                "callback_attempts = 0, callback_status = NULL, callback_error = NULL "
                "WHERE id = ? AND status = 'running'",
                (status, now, outcome.status, json.dumps(outcome.headers), outcome.body, outcome.error, expires_at,
                 "pending" if callback else "none", now, call_id))

    def requeue(self, call_id: str) -> None:
        """A ``running`` call back to ``queued`` (its attempt could not be recorded)."""
        with self._writing():
            self._db.execute("UPDATE async_calls SET status = 'queued' WHERE id = ? AND status = 'running'",
                             (call_id,))

    def requeue_running(self) -> None:
        """On a graceful stop: attempts cut short go back to the queue (they run again at the next start)."""
        with self._writing():
            self._db.execute("UPDATE async_calls SET status = 'queued' WHERE status = 'running'")

    # ---- callbacks ----------------------------------------------------------------------------------

    def callback_row(self, call_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT id, function, callback, callback_state, callback_attempts, status, attempts, submitted_at, "
            "started_at, finished_at, response_status, response_headers, response_body, error "
            "FROM async_calls WHERE id = ?", (call_id,)).fetchone()
        if row is None:
            return None
        keys = ("id", "function", "callback", "callback_state", "callback_attempts", "status", "attempts",
                "submitted_at", "started_at", "finished_at", "response_status", "response_headers",
                "response_body", "error")
        out = dict(zip(keys, row, strict=True))
        out["response_headers"] = [tuple(h) for h in json.loads(out["response_headers"] or "[]")]
        out["response_body"] = bytes(out["response_body"] or b"")
        return out

    def callback_attempted(self, call_id: str, state: str, status: int | None, error: str | None,
                           next_at: float | None) -> None:
        """One delivery made: ``pending`` (retry at ``next_at``), ``delivered`` or ``failed``."""
        with self._writing():
            self._db.execute(
                "UPDATE async_calls SET callback_state = ?, callback_attempts = callback_attempts + 1, "
                "callback_status = ?, callback_error = ?, callback_next_at = ? WHERE id = ?",
                (state, status, error, next_at, call_id))

    # ---- reading, dead letters, retention -----------------------------------------------------------

    def get(self, call_id: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM async_calls WHERE id = ?", (call_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    def list(self, status: str | None, function: str | None, limit: int) -> list[dict[str, Any]]:
        clauses, args = [], []
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if function is not None:
            clauses.append("function = ?")
            args.append(function)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        cur = self._db.execute(
            "SELECT id, function, status, attempts, submitted_at, finished_at, response_status, error, "
            f"callback_state FROM async_calls {where} ORDER BY rowid DESC LIMIT ?", (*args, limit))
        return [dict(zip([c[0] for c in cur.description], row, strict=True)) for row in cur.fetchall()]

    def counts(self) -> list[tuple[str, str, int]]:
        """``(function, status, calls)`` for every function and state with calls (the web UI's Async screen)."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT function, status, COUNT(*) FROM async_calls GROUP BY function, status").fetchall()]

    def redrive(self, call_ids: list[str] | None, function: str | None, now: float) -> list[tuple[str, str]]:
        """Dead (or, named one by one, failed) calls back to ``queued`` with no attempts; returns (id, function)."""
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if call_ids is not None:
                    marks = ",".join("?" * len(call_ids))
                    rows = self._db.execute(
                        f"SELECT id, function FROM async_calls WHERE id IN ({marks}) AND status IN ('dead', 'failed')",
                        call_ids).fetchall()
                else:
                    extra, args = ("AND function = ?", [function]) if function else ("", [])
                    rows = self._db.execute(
                        f"SELECT id, function FROM async_calls WHERE status = 'dead' {extra} ORDER BY rowid",
                        args).fetchall()
                self._db.executemany(
                    "UPDATE async_calls SET status = 'queued', attempts = 0, next_at = ?, finished_at = NULL, "
                    "response_status = NULL, response_headers = NULL, response_body = NULL, error = NULL, "
                    "expires_at = NULL, callback_state = 'none', callback_attempts = 0, callback_status = NULL, "
                    "callback_error = NULL, callback_next_at = NULL WHERE id = ?", [(now, r[0]) for r in rows])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return [(r[0], r[1]) for r in rows]

    def purge(self, call_id: str | None, status: str | None, function: str | None) -> int:
        """Delete one final call (by id) or every call of ``status`` (and ``function``); never a live one."""
        with self._writing():
            if call_id is not None:
                return self._db.execute(
                    "DELETE FROM async_calls WHERE id = ? AND status IN ('succeeded', 'failed', 'dead') "
                    "AND callback_state != 'pending'", (call_id,)).rowcount
            extra, args = ("AND function = ?", [function]) if function else ("", [])
            return self._db.execute(
                f"DELETE FROM async_calls WHERE status = ? AND callback_state != 'pending' {extra}",
                [status, *args]).rowcount

    def purge_expired(self, now: float) -> int:
        """Results past their retention (and whose callback is no longer pending) are deleted."""
        with self._writing():
            return self._db.execute(
                "DELETE FROM async_calls WHERE expires_at IS NOT NULL AND expires_at <= ? "
                "AND callback_state != 'pending'", (now,)).rowcount
