"""Pure logic of the router: variant arithmetic, breaker state machine, deadlines, trace context, options."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from hydro_serving.errors import ConfigError, ValidationError
from hydro_serving.router.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from hydro_serving.router.deadline import Deadline, parse_timeout_header
from hydro_serving.router.options import RouterOptions
from hydro_serving.router.tracing import incoming_trace, new_span_id, parse_traceparent
from hydro_serving.router.variants import choose_variant, pick_by_weight, sticky_draw


class FakeClock:
    """A hand-moved monotonic clock: the breaker and deadline logic without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---- variants ---------------------------------------------------------------------------------


def test_cumulative_weight_boundaries() -> None:
    variants = [("a", 90), ("b", 10)]
    assert pick_by_weight(variants, 0.0) == "a"
    assert pick_by_weight(variants, 0.8999) == "a"
    assert pick_by_weight(variants, 0.9) == "b"
    assert pick_by_weight(variants, 0.99999) == "b"


def test_zero_weight_never_chosen() -> None:
    variants = [("a", 0), ("b", 100), ("c", 0)]
    assert {pick_by_weight(variants, i / 1000) for i in range(1000)} == {"b"}
    assert pick_by_weight([("a", 50), ("b", 50), ("c", 0)], 0.9999999999999999) == "b"


def test_ninety_ten_over_2000_draws() -> None:
    rng = random.Random(20240605)
    counts = Counter(choose_variant([("a", 90), ("b", 10)], 1, rng=rng) for _ in range(2000))
    assert set(counts) == {"a", "b"}
    assert 0.87 <= counts["a"] / 2000 <= 0.93


def test_three_way_split_follows_weights() -> None:
    rng = random.Random(7)
    counts = Counter(choose_variant([("a", 50), ("b", 30), ("c", 20)], 2, rng=rng) for _ in range(4000))
    assert abs(counts["a"] / 4000 - 0.5) < 0.03
    assert abs(counts["b"] / 4000 - 0.3) < 0.03
    assert abs(counts["c"] / 4000 - 0.2) < 0.03


def test_sticky_key_is_stable_and_still_splits() -> None:
    variants = [("a", 90), ("b", 10)]
    first = [choose_variant(variants, 1, key=f"user-{i}") for i in range(2000)]
    again = [choose_variant(variants, 1, key=f"user-{i}", rng=random.Random(i)) for i in range(2000)]
    assert first == again  # the key decides, never the rng
    share = first.count("a") / 2000
    assert 0.87 <= share <= 0.93
    # sha256, not hash(): the same in every process and on every machine
    expected = int.from_bytes(hashlib.sha256(b"1:user-1").digest()[:8], "big") / 2**64
    assert sticky_draw("user-1", 1) == expected


def test_sticky_choice_independent_per_stage() -> None:
    draws = {(sticky_draw(f"k{i}", 1) < 0.5, sticky_draw(f"k{i}", 2) < 0.5) for i in range(200)}
    assert draws == {(True, True), (True, False), (False, True), (False, False)}


def test_single_variant_needs_no_draw() -> None:
    class Exploding(random.Random):
        def random(self) -> float:
            raise AssertionError("no draw expected for a plain stage")

    assert choose_variant([("only", 100)], 1, rng=Exploding()) == "only"


# ---- circuit breaker --------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN
    decision = breaker.acquire()
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(10)
    clock.now += 4
    assert breaker.acquire().retry_after == pytest.approx(6)


def test_breaker_half_open_lets_one_probe_and_closes_on_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    assert breaker.state == OPEN
    clock.now += 5
    assert breaker.state == HALF_OPEN
    assert breaker.peek().allowed
    probe = breaker.acquire()
    assert probe.allowed and probe.trial
    assert not breaker.acquire().allowed  # a second caller waits for the probe's verdict
    assert not breaker.peek().allowed
    breaker.record_success()
    assert breaker.state == CLOSED
    assert breaker.acquire().allowed


def test_breaker_half_open_probe_failure_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=5, cooldown=5, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 6
    assert breaker.acquire().trial
    breaker.record_failure()  # one failure is enough while half-open
    assert breaker.state == OPEN
    clock.now += 4.9
    assert not breaker.acquire().allowed
    clock.now += 0.2
    assert breaker.acquire().allowed


# ---- deadlines --------------------------------------------------------------------------------


def test_deadline_from_header_or_default() -> None:
    clock = FakeClock(100.0)
    d = Deadline.start({"X-Timeout": "2.5"}, default_timeout=60, margin=0.05, clock=clock)
    assert d.at == pytest.approx(102.5)
    d = Deadline.start({}, default_timeout=60, margin=0.05, clock=clock)
    assert d.at == pytest.approx(160)
    d = Deadline.start({"x-timeout": "30"}, default_timeout=60, runtime_deadline=110.0, clock=clock)
    assert d.at == pytest.approx(110)  # the earliest deadline wins


def test_stage_share_is_remaining_capped_by_stage_timeout() -> None:
    clock = FakeClock(0.0)
    d = Deadline.start({"X-Timeout": "10"}, default_timeout=60, margin=0.05, clock=clock)
    assert d.for_stage(None) == pytest.approx(9.95)
    assert d.for_stage(3.0) == pytest.approx(3.0)
    clock.now = 8.0
    assert d.for_stage(3.0) == pytest.approx(1.95)
    clock.now = 10.0
    assert d.for_stage(None) <= 0


def test_margin_never_eats_a_small_budget() -> None:
    d = Deadline.start({"X-Timeout": "0.1"}, default_timeout=60, margin=0.05, clock=FakeClock(0.0))
    assert d.margin == pytest.approx(0.01)


@pytest.mark.parametrize("raw", ["soon", "-1", "0", "nan", "inf"])
def test_bad_timeout_header_is_400(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_timeout_header({"X-Timeout": raw})
    assert info.value.field == "X-Timeout"
    assert info.value.status == 400


def test_timeout_header_accepts_seconds_suffix() -> None:
    assert parse_timeout_header({"X-Timeout": "1.5s"}) == 1.5
    assert parse_timeout_header({}) is None


# ---- trace context ----------------------------------------------------------------------------

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_parsed_and_continued() -> None:
    ctx = parse_traceparent(VALID)
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, ctx.flags) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    child = ctx.child()
    assert child.trace_id == ctx.trace_id and child.span_id != ctx.span_id
    assert child.header.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and child.header.endswith("-01")


@pytest.mark.parametrize("bad", [
    None, "", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
])
def test_invalid_traceparent_starts_a_new_trace(bad: str | None) -> None:
    assert parse_traceparent(bad) is None
    fresh = incoming_trace(bad)
    assert len(fresh.trace_id) == 32 and len(fresh.span_id) == 16 and fresh.flags == "01"
    assert parse_traceparent(fresh.header) == fresh


def test_future_version_read_by_first_four_fields() -> None:
    ctx = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
    assert ctx is not None and ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_span_ids_are_fresh() -> None:
    assert len({new_span_id() for _ in range(100)}) == 100


# ---- options ----------------------------------------------------------------------------------


def test_options_parse_durations_and_refuse_unknown_keys() -> None:
    opts = RouterOptions.from_options({"breaker_failures": 3, "breaker_cooldown": "2s", "retry_backoff": "10ms",
                                       "stage_signatures": {}})
    assert (opts.breaker_failures, opts.breaker_cooldown, opts.retry_backoff) == (3, 2.0, 0.01)
    with pytest.raises(ConfigError) as info:
        RouterOptions.from_options({"breaker_failure": 3})
    assert info.value.field == "options.breaker_failure"
    with pytest.raises(ConfigError) as info:
        RouterOptions.from_options({"breaker_failures": 0})
    assert info.value.field == "options.breaker_failures"
    with pytest.raises(ConfigError):
        RouterOptions.from_options({"prewarm": "yes"})
    assert RouterOptions.from_options({"connect_retries": 0}).connect_retries == 0
