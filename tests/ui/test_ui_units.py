"""The UI's parts without a browser: traffic windows from real metric series, SVG escaping, sessions."""

from __future__ import annotations

import pytest

from hydro_serving.errors import BadRequest, Forbidden, TooManyRequests
from hydro_serving.gateway.auth import Credentials
from hydro_serving.gateway.metrics import GatewayMetrics
from hydro_serving.ui import svg
from hydro_serving.ui.session import MAX_SESSIONS, SESSION_IDLE, Sessions, check_csrf
from hydro_serving.ui.stats import TICK, Recorder, quantile


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quantile_interpolates_inside_the_bucket() -> None:
    # 17 cumulative buckets of DURATION_BUCKETS + Inf: 10 requests all in (0.005, 0.01]
    buckets = [0, 0, 0] + [10] * 14
    assert quantile(0.5, buckets) == pytest.approx(0.0075)
    assert quantile(0.5, [0] * 17) is None
    assert quantile(0.99, [0] * 16 + [4]) == 120  # beyond the last bound: the last bound, not infinity


def test_recorder_windows_errors_and_the_cold_start_split_from_the_gateway_series() -> None:
    metrics = GatewayMetrics()
    clock = Clock()
    recorder = Recorder(metrics, clock)
    fn = metrics.for_function("f")
    recorder.sample(["f"])
    fn.process_start.observe(0.4)
    fn.model_load.observe(1.2)
    fn.cold_starts.inc()
    for _ in range(90):
        fn.invoked(200, 0.004)
    for _ in range(10):
        fn.invoked(502, 0.2)
    clock.now += TICK
    recorder.sample(["f"])
    win = recorder.window("f")
    assert win["requests"] == 100 and win["error_rate"] == pytest.approx(0.1)
    assert 2.5 < win["p50_ms"] <= 5 and win["p95_ms"] > 100
    assert win["cold_starts"] == 1
    cold = recorder.cold("f")
    assert cold.process_start == pytest.approx(0.4) and cold.model_load == pytest.approx(1.2)
    assert recorder.series("f")["rps"][-1] == pytest.approx(100 / TICK)
    # five minutes later without traffic the window is empty again, the split stays
    for _ in range(200):
        clock.now += TICK
        recorder.sample(["f"])
    assert recorder.window("f")["requests"] == 0 and recorder.cold("f").process_start == pytest.approx(0.4)
    recorder.sample([])  # removed: its history goes
    assert recorder.history == {}


def test_svg_escapes_every_text_it_draws() -> None:
    hostile = '<script>alert(1)</script>"&'
    out = [svg.histogram_pair({"field": hostile, "bins": [hostile, "b"], "reference": [1, 2], "production": [3, 0]}),
           svg.sparkline([1, float("nan"), 3], hostile),
           svg.bars([0.5, None, 1.0], hostile),
           svg.pipeline_graph(hostile, [{"variants": [{"function": hostile, "weight": 100, "observed": 0.5}],
                                         "shadow": [hostile]}]),
           svg.profile_histogram({"name": hostile, "top": [{"value": hostile, "count": 3}]})]
    for drawing in out:
        assert "<script" not in str(drawing) and "&lt;script&gt;" in str(drawing)


def test_sessions_passwords_expiry_bounds_and_the_login_limit() -> None:
    sessions = Sessions(Credentials(token="t" * 43, user="admin", password="s3cret"))
    assert sessions.check_password("admin", "s3cret")
    assert not sessions.check_password("admin", "S3cret") and not sessions.check_password("root", "s3cret")
    assert not sessions.check_password("admin", "x" * 10_000)
    for _ in range(5):
        sessions.admit_login("10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        sessions.admit_login("10.0.0.1")
    assert int(refused.value.headers["Retry-After"]) >= 1
    sessions.admit_login("10.0.0.2")  # another address has its own bucket
    first = sessions.create()
    for _ in range(MAX_SESSIONS + 5):
        sessions.create()
    assert len(sessions) == MAX_SESSIONS and first.id not in sessions._sessions
    stale = sessions.create()
    stale.seen -= SESSION_IDLE + 1

    class Req:
        cookies = {"hydro_ui": stale.id}

    assert sessions.current(Req()) is None and stale.id not in sessions._sessions


def test_csrf_token_must_be_the_sessions() -> None:
    check_csrf("abc", {"csrf": "abc"})
    for form in ({}, {"csrf": ""}, {"csrf": "abd"}, {"csrf": ["abc"]}):
        with pytest.raises(Forbidden) as refused:
            check_csrf("abc", form)
        assert refused.value.field == "csrf"
    assert issubclass(Forbidden, Exception) and not issubclass(Forbidden, BadRequest)


def test_async_counts_and_recent_read_the_real_store(tmp_path) -> None:
    from hydro_serving.gateway.asyncstore import AsyncStore, Outcome
    from hydro_serving.ui.asyncview import counts, recent

    store = AsyncStore(tmp_path)
    try:
        for n, fn in enumerate(["b-fn", "a-fn", "a-fn"]):
            store.insert(f"id-{n}", fn, "POST", "", [], b"{}", None, None, 100.0 + n)
        assert store.start_attempt("id-1", 101.5) == 1
        store.finish("id-1", "dead", Outcome(500, [], b"", "the function answered 500"), 102.0, None, False)
        assert store.start_attempt("id-2", 103.0) == 1
        assert counts(store) == [
            {"function": "a-fn", "queued": 0, "running": 1, "succeeded": 0, "failed": 0, "dead": 1},
            {"function": "b-fn", "queued": 1, "running": 0, "succeeded": 0, "failed": 0, "dead": 0}]
        dead = recent(store, "dead", "a-fn")
        assert [(c["id"], c["attempts"], c["took"], c["http"], c["error"]) for c in dead] == [
            ("id-1", 1, "1000 ms", 500, "the function answered 500")]
        assert [c["id"] for c in recent(store, None, None)] == ["id-2", "id-1", "id-0"]  # newest first
    finally:
        store.close()
