"""The request-path side: ids and traces from headers, deterministic sampling, the bounded queue, the opt-out."""

from __future__ import annotations

import pytest

from hydro_serving.monitor.sampler import Sampler, sample_point, tap, trace_id_for
from hydro_serving.monitor.service import Monitor
from hydro_serving.monitor.storage import SQLiteStore

from .conftest import exchange, scoring_spec

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_tap_ids_and_traces() -> None:
    t = tap({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert (t.request_id, t.trace_id, t.traceparent, t.opted_out) == (TRACE, TRACE, None, False)
    t = tap({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "X-Request-Id": "order-1"})
    assert (t.request_id, t.trace_id) == ("order-1", TRACE)
    t = tap({"X-Request-Id": "order-1"})
    assert t.trace_id == trace_id_for("order-1") and t.traceparent.startswith(f"00-{t.trace_id}-")
    assert tap({"X-Request-Id": "order-1"}).trace_id == t.trace_id  # the same id, the same trace
    fresh = tap({})
    assert fresh.request_id == fresh.trace_id and len(fresh.trace_id) == 32 and fresh.traceparent
    parts = fresh.traceparent.split("-")
    assert [len(p) for p in parts] == [2, 32, 16, 2]
    assert tap({}).trace_id != fresh.trace_id


@pytest.mark.parametrize("headers", [
    {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
    {"traceparent": "garbage"}, {"traceparent": "00-XYZ-1-01" + "x" * 60},
    {"X-Request-Id": "a" * 200}, {"X-Request-Id": "has space"}, {"X-Request-Id": ""},
    {"X-Hydro-Monitor": "\x00"},
])
def test_hostile_headers_get_a_fresh_id(headers) -> None:
    t = tap(headers)
    assert len(t.request_id) == 32 and t.request_id == t.trace_id and t.traceparent is not None


def test_sampling_is_deterministic_by_trace_and_close_to_the_rate() -> None:
    spec = scoring_spec(sample=0.25)
    sampler = Sampler()
    decisions = [sampler.wants(spec, tap({"X-Request-Id": f"r{i}"})) for i in range(20_000)]
    assert abs(sum(decisions) / len(decisions) - 0.25) < 0.015
    again = [sampler.wants(spec, tap({"X-Request-Id": f"r{i}"})) for i in range(20_000)]
    assert decisions == again  # every stage and every gateway replica decides the same for a trace
    assert all(sampler.wants(spec, tap({"X-Request-Id": f"r{i}"})) == (sample_point(trace_id_for(f"r{i}")) < 0.25)
               for i in range(100))
    off = scoring_spec(sample=0.0)
    assert not any(sampler.wants(off, tap({})) for _ in range(1000))
    assert not Sampler().wants(scoring_spec(sample=1.0), tap({"X-Hydro-Monitor": "off"}))
    assert Sampler().wants(scoring_spec(sample=1.0), tap({"X-Hydro-Monitor": "on"}))


def test_full_queue_drops_and_counts_by_count_and_by_bytes() -> None:
    spec = scoring_spec()
    sampler = Sampler(maxsize=3, max_bytes=1000)
    results = [sampler.offer(tap({}), spec, b"x" * 10, b"y" * 10, 200) for _ in range(5)]
    assert results == [True, True, True, False, False] and sampler.dropped["scoring"] == 2
    assert len(sampler.drain()) == 3 and sampler.queued_bytes == 0
    assert sampler.offer(tap({}), spec, b"x" * 600, b"", 200)
    assert not sampler.offer(tap({}), spec, b"x" * 600, b"", 200)  # would hold more than max_bytes
    assert sampler.dropped["scoring"] == 3 and len(sampler.queue) == 1


def test_a_window_closes_on_time_with_enough_rows(tmp_path) -> None:
    spec = scoring_spec(rows=1000)
    monitor = Monitor(SQLiteStore(tmp_path / "m.db"), profile_loader=lambda s: None)
    rows = [{"x": float(i % 7), "y": 1.0, "plan": "a"} for i in range(1000)]
    monitor.process([exchange(spec, rows, ts=0.0)], 0.0)  # 1000 rows: the baseline window closes on rows
    monitor.process([exchange(spec, rows[:5], ts=1.0)], 1.0)
    monitor.process([], 7200.0)  # an hour later: 5 rows are too few to say anything
    assert monitor.store.last_seq("scoring") == 1
    monitor.process([exchange(spec, rows[:20], ts=7201.0)], 7201.0)  # 25 rows, past the window's time
    assert monitor.store.last_seq("scoring") == 2 and monitor.store.window("scoring", 2)["rows"] == 25

