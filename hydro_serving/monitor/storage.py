"""Where the monitor keeps sampled rows, window results, baselines and feedback: SQLite by default.

Everything goes through :class:`MonitorStore`, the one seam to swap. ``open_monitor_store(url)``
picks the implementation from the URL: ``sqlite:///path/monitor.db`` (the default, a file of its
own in the gateway's state directory, mode 0600). To move to PostgreSQL when one machine is no
longer enough, implement the same methods over ``psycopg`` (the SQL below is portable apart from
``INSERT OR REPLACE``, which becomes ``INSERT ... ON CONFLICT DO UPDATE``, and ``AUTOINCREMENT``,
which becomes ``BIGSERIAL``) and return it from ``open_monitor_store`` for ``postgresql://`` URLs;
nothing else in the monitor touches SQL.

Retention: at most ``max_rows`` sampled rows per function and nothing older than ``max_age``
seconds; windows and feedback have their own bounds. Pruning runs on every insert batch with
indexed deletes, so the file stops growing once the bounds are reached.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hydro_serving.errors import ConfigError

DEFAULT_MAX_ROWS = 50_000  # sampled rows kept per function
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_MAX_WINDOWS = 2_000  # window results kept per function
DEFAULT_MAX_FEEDBACK = 200_000  # labels kept per function


@dataclass(frozen=True)
class StoredRow:
    """One sampled row as stored: ids, time, status, variant, the decoded fields, the failed checks."""

    id: int
    function: str
    request_id: str
    trace_id: str
    row: int
    ts: float
    status: int
    variant: str | None
    window: int
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    failures: list[dict[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "row": self.row, "ts": self.ts, "status": self.status,
                "variant": self.variant, "window": self.window, "healthy": not self.failures,
                "failures": self.failures, "inputs": self.inputs, "outputs": self.outputs}


@dataclass(frozen=True)
class NewRow:
    function: str
    request_id: str
    trace_id: str
    row: int
    ts: float
    status: int
    variant: str | None
    window: int
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    failures: list[dict[str, str]]


class MonitorStore(Protocol):
    """The storage seam: an implementation per database, chosen by :func:`open_monitor_store`."""

    def add_rows(self, rows: Sequence[NewRow]) -> None: ...
    def rows(self, function: str, *, unhealthy_only: bool = False, window: int | None = None,
             limit: int = 100) -> list[StoredRow]: ...
    def rows_for_requests(self, function: str, ids: Sequence[str], trace_ids: Sequence[str]) -> list[StoredRow]: ...
    def count_rows(self, function: str | None = None) -> int: ...
    def add_window(self, function: str, seq: int, summary: dict[str, Any]) -> None: ...
    def windows(self, function: str, limit: int = 20) -> list[dict[str, Any]]: ...
    def window(self, function: str, seq: int) -> dict[str, Any] | None: ...
    def last_seq(self, function: str) -> int: ...
    def put_baseline(self, function: str, side: str, key: str, data: dict[str, Any]) -> None: ...
    def baseline(self, function: str, side: str, key: str) -> dict[str, Any] | None: ...
    def add_feedback(self, function: str, items: Iterable[tuple[str, int, Any]]) -> int: ...
    def feedback(self, function: str, request_ids: Sequence[str]) -> dict[tuple[str, int], Any]: ...
    def prune(self, now: float | None = None) -> None: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
  id INTEGER PRIMARY KEY AUTOINCREMENT, function TEXT NOT NULL, request_id TEXT NOT NULL, trace_id TEXT NOT NULL,
  row INTEGER NOT NULL, ts REAL NOT NULL, status INTEGER NOT NULL, variant TEXT, window INTEGER NOT NULL,
  healthy INTEGER NOT NULL, inputs TEXT NOT NULL, outputs TEXT, failures TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS samples_fn ON samples(function, id);
CREATE INDEX IF NOT EXISTS samples_req ON samples(function, request_id);
CREATE INDEX IF NOT EXISTS samples_trace ON samples(function, trace_id);
CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);
CREATE INDEX IF NOT EXISTS samples_unhealthy ON samples(function, healthy, id);
CREATE TABLE IF NOT EXISTS windows (
  function TEXT NOT NULL, seq INTEGER NOT NULL, ended REAL NOT NULL, summary TEXT NOT NULL,
  PRIMARY KEY (function, seq));
CREATE TABLE IF NOT EXISTS baselines (
  function TEXT NOT NULL, side TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (function, side));
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT, function TEXT NOT NULL, request_id TEXT NOT NULL, row INTEGER NOT NULL,
  label TEXT NOT NULL, ts REAL NOT NULL, UNIQUE (function, request_id, row));
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback(ts);
"""


def _dumps(value: Any) -> str:
    # NaN/Infinity a caller sent are kept as JSON's extension (Python reads them back); the API maps them to null
    return json.dumps(value, separators=(",", ":"), default=str)


class SQLiteStore:
    """:class:`MonitorStore` over one SQLite file (WAL); one lock, so any thread may call it."""

    def __init__(self, path: str | Path, max_rows: int = DEFAULT_MAX_ROWS, max_age: float = DEFAULT_MAX_AGE,
                 max_windows: int = DEFAULT_MAX_WINDOWS, max_feedback: int = DEFAULT_MAX_FEEDBACK) -> None:
        self.path = Path(path)
        self.max_rows, self.max_age = max_rows, max_age
        self.max_windows, self.max_feedback = max_windows, max_feedback
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # created private, never world-readable
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    # ---- samples ---------------------------------------------------------------------------------

    def add_rows(self, rows: Sequence[NewRow]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO samples (function, request_id, trace_id, row, ts, status, variant, window, healthy, "
                "inputs, outputs, failures) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(r.function, r.request_id, r.trace_id, r.row, r.ts, r.status, r.variant, r.window,
                  int(not r.failures), _dumps(r.inputs), None if r.outputs is None else _dumps(r.outputs),
                  _dumps(r.failures)) for r in rows])
            for function in {r.function for r in rows}:
                self._prune_rows(function)
            self._db.execute("COMMIT")

    def _prune_rows(self, function: str) -> None:
        cut = self._db.execute("SELECT id FROM samples WHERE function=? ORDER BY id DESC LIMIT 1 OFFSET ?",
                               (function, self.max_rows)).fetchone()
        if cut is not None:
            self._db.execute("DELETE FROM samples WHERE function=? AND id<=?", (function, cut[0]))

    def _row(self, r: tuple[Any, ...]) -> StoredRow:
        return StoredRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9]),
                         None if r[10] is None else json.loads(r[10]), json.loads(r[11]))

    _COLS = "id, function, request_id, trace_id, row, ts, status, variant, window, inputs, outputs, failures"

    def rows(self, function: str, *, unhealthy_only: bool = False, window: int | None = None,
             limit: int = 100) -> list[StoredRow]:
        sql, args = f"SELECT {self._COLS} FROM samples WHERE function=?", [function]
        if unhealthy_only:
            sql += " AND healthy=0"
        if window is not None:
            sql += " AND window=?"
            args.append(window)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [self._row(r) for r in self._db.execute(sql, args).fetchall()]

    def rows_for_requests(self, function: str, ids: Sequence[str], trace_ids: Sequence[str]) -> list[StoredRow]:
        out: list[StoredRow] = []
        with self._lock:
            for column, keys in (("request_id", ids), ("trace_id", trace_ids)):
                for i in range(0, len(keys), 500):
                    chunk = list(keys[i:i + 500])
                    marks = ",".join("?" * len(chunk))
                    out += [self._row(r) for r in self._db.execute(
                        f"SELECT {self._COLS} FROM samples WHERE function=? AND {column} IN ({marks})",
                        [function, *chunk]).fetchall()]
        seen: set[int] = set()
        return [r for r in out if not (r.id in seen or seen.add(r.id))]

    def count_rows(self, function: str | None = None) -> int:
        with self._lock:
            if function is None:
                return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM samples WHERE function=?", (function,)).fetchone()[0])

    # ---- windows and baselines ---------------------------------------------------------------------

    def add_window(self, function: str, seq: int, summary: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO windows (function, seq, ended, summary) VALUES (?,?,?,?)",
                             (function, seq, float(summary.get("ended") or time.time()), _dumps(summary)))
            self._db.execute("DELETE FROM windows WHERE function=? AND seq<=?", (function, seq - self.max_windows))

    def windows(self, function: str, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT summary FROM windows WHERE function=? ORDER BY seq DESC LIMIT ?",
                                    (function, limit)).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def window(self, function: str, seq: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT summary FROM windows WHERE function=? AND seq=?",
                                   (function, seq)).fetchone()
        return None if row is None else json.loads(row[0])

    def last_seq(self, function: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM windows WHERE function=?", (function,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def put_baseline(self, function: str, side: str, key: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO baselines (function, side, key, data) VALUES (?,?,?,?)",
                             (function, side, key, _dumps(data)))

    def baseline(self, function: str, side: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM baselines WHERE function=? AND side=? AND key=?",
                                   (function, side, key)).fetchone()
        return None if row is None else json.loads(row[0])

    # ---- feedback ------------------------------------------------------------------------------------

    def add_feedback(self, function: str, items: Iterable[tuple[str, int, Any]]) -> int:
        now = time.time()
        batch = [(function, rid, row, _dumps(label), now) for rid, row, label in items]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO feedback (function, request_id, row, label, ts) "
                                 "VALUES (?,?,?,?,?)", batch)
            cut = self._db.execute("SELECT id FROM feedback WHERE function=? ORDER BY id DESC LIMIT 1 OFFSET ?",
                                   (function, self.max_feedback)).fetchone()
            if cut is not None:
                self._db.execute("DELETE FROM feedback WHERE function=? AND id<=?", (function, cut[0]))
            self._db.execute("COMMIT")
        return len(batch)

    def feedback(self, function: str, request_ids: Sequence[str]) -> dict[tuple[str, int], Any]:
        out: dict[tuple[str, int], Any] = {}
        with self._lock:
            for i in range(0, len(request_ids), 500):
                chunk = list(request_ids[i:i + 500])
                marks = ",".join("?" * len(chunk))
                for rid, row, label in self._db.execute(
                        f"SELECT request_id, row, label FROM feedback WHERE function=? AND request_id IN ({marks})",
                        [function, *chunk]).fetchall():
                    out[(rid, row)] = json.loads(label)
        return out

    # ---- retention -------------------------------------------------------------------------------------

    def prune(self, now: float | None = None) -> None:
        """Drop rows, windows and feedback older than ``max_age`` (count bounds apply on insert)."""
        cutoff = (time.time() if now is None else now) - self.max_age
        with self._lock:
            self._db.execute("DELETE FROM samples WHERE ts<?", (cutoff,))
            self._db.execute("DELETE FROM windows WHERE ended<?", (cutoff,))
            self._db.execute("DELETE FROM feedback WHERE ts<?", (cutoff,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_monitor_store(url: str | Path, **bounds: Any) -> MonitorStore:
    """The store for ``url``: a path or ``sqlite:///path`` (built in); other schemes are refused, naming the seam."""
    text = str(url)
    if text.startswith("sqlite://"):
        text = text.removeprefix("sqlite://")
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigError(f"monitor store scheme '{scheme}' is not built in: implement "
                          "hydro_serving.monitor.storage.MonitorStore for it (see the module's docstring)",
                          field="HYDRO_MONITOR_DB")
    return SQLiteStore(text, **bounds)
