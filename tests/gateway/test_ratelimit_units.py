"""The token buckets of hydro_serving.gateway.ratelimit, on an injected clock (no sleeping, no timing)."""

from __future__ import annotations

import pytest

from hydro_serving.gateway.ratelimit import RateLimiter, RatePolicy, rate_headers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_times_the_rate_admits_the_rate_plus_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    policy = RatePolicy(rps=20, burst=20, per="function")
    allowed = 0
    for _ in range(1000):  # 1000 requests at 100 req/s, five times the rate: 10 s
        allowed += limiter.take("f", policy, "*").allowed
        clock.now += 0.01
    expected = 20 + 20 * 10  # the burst, then the refill
    assert abs(allowed - expected) <= 2
    assert 1000 - allowed == pytest.approx(1000 - expected, rel=0.05)


def test_the_limit_holds_per_key_and_keyless_callers_share_their_address() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    policy = RatePolicy(rps=1, burst=3, per="key")
    alice = limiter.identity(policy, "k1", "10.0.0.1")
    bob = limiter.identity(policy, "k2", "10.0.0.1")
    anon = limiter.identity(policy, None, "10.0.0.1")
    assert [limiter.take("f", policy, alice).allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.take("f", policy, bob).allowed  # bob's bucket is his own
    assert limiter.take("f", policy, anon).allowed
    assert limiter.take("g", policy, alice).allowed  # and each function has its own buckets
    assert limiter.identity(RatePolicy(1, 1, "ip"), "k1", "10.0.0.9") == "ip:10.0.0.9"
    assert limiter.identity(RatePolicy(1, 1, "function"), "k1", "10.0.0.9") == "*"


def test_refusal_says_when_to_come_back_in_ietf_fields() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    policy = RatePolicy(rps=0.5, burst=2, per="ip")
    limiter.take("fn", policy, "ip:a")
    limiter.take("fn", policy, "ip:a")
    refused = limiter.take("fn", policy, "ip:a")
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == pytest.approx(2.0)
    headers = rate_headers("fn", policy, refused)
    assert headers["Retry-After"] == "2"
    assert headers["RateLimit-Policy"] == '"fn";q=2;w=4'
    assert headers["RateLimit"] == '"fn";r=0;t=4'
    clock.now += 2.0
    assert limiter.take("fn", policy, "ip:a").allowed


def test_random_callers_cannot_grow_memory_without_bound() -> None:
    """Attacker: a million distinct client addresses keep at most max_buckets buckets."""
    clock = Clock()
    limiter = RateLimiter(max_buckets=1000, clock=clock)
    policy = RatePolicy(rps=1, burst=5, per="ip")
    for i in range(20_000):
        limiter.take("f", policy, f"ip:{i}")
    assert len(limiter) <= 1000
    limiter.forget("f")
    assert len(limiter) == 0


def test_a_changed_policy_starts_a_fresh_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    tight = RatePolicy(rps=1, burst=1, per="function")
    assert limiter.take("f", tight, "*").allowed
    assert not limiter.take("f", tight, "*").allowed
    assert limiter.take("f", RatePolicy(rps=10, burst=10, per="function"), "*").allowed


@pytest.mark.parametrize("raw", [{"rps": 0}, {"rps": -1}, {"rps": float("nan")}, {"rps": 1, "burst": 0},
                                 {"rps": 1, "per": "user"}])
def test_bad_policies_are_refused(raw: dict) -> None:
    with pytest.raises(ValueError):
        RatePolicy.from_dict(raw)
