"""SQLite storage: private file, retention by count and age, windows, baselines and feedback round trips."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from hydro_serving.errors import ConfigError
from hydro_serving.monitor.storage import NewRow, SQLiteStore, open_monitor_store


def _row(fn: str, i: int, ts: float, healthy: bool = True) -> NewRow:
    return NewRow(fn, f"req-{i}", f"{i:032x}", 0, ts, 200, None, i // 400 + 1, {"x": i}, {"y": i % 2},
                  [] if healthy else [{"field": "x", "check": "out_of_range", "detail": "d"}])


def test_file_is_private_and_other_schemes_name_the_seam(tmp_path: Path) -> None:
    store = open_monitor_store(f"sqlite://{tmp_path}/state/monitor.db")
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "monitor.db").st_mode) == 0o600
    store.close()
    with pytest.raises(ConfigError) as err:
        open_monitor_store("postgresql://db/monitor")
    assert "MonitorStore" in str(err.value) and err.value.to_dict()["field"] == "HYDRO_MONITOR_DB"


def test_retention_holds_after_100000_sampled_rows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "m.db", max_rows=5_000, max_age=3600)
    now = time.time()
    for start in range(0, 100_000, 2_000):
        store.add_rows([_row("a" if i % 4 else "b", i, now, healthy=i % 7 != 0) for i in range(start, start + 2_000)])
    assert store.count_rows("a") == 5_000 and store.count_rows("b") == 5_000
    newest = store.rows("a", limit=1)[0]
    assert newest.request_id == "req-99999"
    assert min(r.id for r in store.rows("a", limit=10_000)) > 90_000  # the oldest went first
    size_at_bound = os.path.getsize(tmp_path / "m.db")
    for start in range(100_000, 140_000, 2_000):
        store.add_rows([_row("a", i, now) for i in range(start, start + 2_000)])
    assert store.count_rows("a") == 5_000
    assert os.path.getsize(tmp_path / "m.db") < size_at_bound * 3  # freed pages are reused: no unbounded growth
    store.add_rows([_row("c", i, now - 7200) for i in range(100)])
    store.prune(now)
    assert store.count_rows("c") == 0 and store.count_rows("a") == 5_000


def test_windows_baselines_feedback(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "m.db", max_windows=3)
    for seq in range(1, 6):
        store.add_window("f", seq, {"seq": seq, "ended": time.time(), "drift": seq > 3})
    assert [w["seq"] for w in store.windows("f", 10)] == [3, 4, 5] and store.last_seq("f") == 5
    assert store.window("f", 1) is None and store.window("f", 4)["drift"] is True
    store.put_baseline("f", "input", "k1", {"source": "window"})
    assert store.baseline("f", "input", "k1") == {"source": "window"} and store.baseline("f", "input", "k2") is None
    store.add_feedback("f", [("r1", 0, True), ("r1", 1, False), ("r2", 0, 3.5)])
    store.add_feedback("f", [("r1", 0, False)])  # a correction replaces the label
    assert store.feedback("f", ["r1", "r2", "zz"]) == {("r1", 0): False, ("r1", 1): False, ("r2", 0): 3.5}


def test_gateway_settings_from_the_environment(tmp_path: Path) -> None:
    from hydro_serving.monitor.service import for_gateway

    monitor = for_gateway(tmp_path, None, {"HYDRO_MONITOR_QUEUE": "5", "HYDRO_MONITOR_MAX_ROWS": "100",
                                           "HYDRO_MONITOR_MAX_DAYS": "0.5"})
    assert monitor.sampler.maxsize == 5 and monitor.store.max_rows == 100 and monitor.store.max_age == 43200
    assert (tmp_path / "monitor.db").exists()
    monitor.store.close()
    other = for_gateway(tmp_path, None, {"HYDRO_MONITOR_DB": f"sqlite://{tmp_path}/elsewhere/m.db"})
    assert other.store.path == tmp_path / "elsewhere" / "m.db"
    other.store.close()
    for key, value in (("HYDRO_MONITOR_QUEUE", "-1"), ("HYDRO_MONITOR_MAX_ROWS", "lots"),
                       ("HYDRO_MONITOR_MAX_DAYS", "nan")):
        with pytest.raises(ConfigError) as err:
            for_gateway(tmp_path, None, {key: value})
        assert err.value.to_dict()["field"] == key
