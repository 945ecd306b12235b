"""The async queue's pure rules: the backoff, what is retried, the callback URL check, the settings."""

from __future__ import annotations

import random

import pytest

from hydro_serving.errors import BadRequest
from hydro_serving.gateway.asyncq import AsyncSettings, backoff_delay, is_retryable, parse_retry_after
from hydro_serving.gateway.asyncroutes import check_callback_url
from hydro_serving.stack import AsyncPolicy


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = AsyncPolicy(retries=10, backoff_min=1.0, backoff_max=120.0)
    rand = random.Random(7)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (7, 64.0), (8, 120.0), (30, 120.0)):
        delays = [backoff_delay(policy, attempt, None, rand) for _ in range(300)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2  # spread over the whole range: jitter


def test_retry_after_is_a_floor_capped_at_the_backoff_max() -> None:
    policy = AsyncPolicy(backoff_min=0.01, backoff_max=5.0)
    assert backoff_delay(policy, 1, 3.0) >= 3.0
    assert backoff_delay(policy, 1, 10_000.0) == 5.0  # a hostile Retry-After cannot park a call for hours
    assert parse_retry_after([("Retry-After", "7")]) == 7.0
    assert parse_retry_after([("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]) is None
    assert parse_retry_after([("Retry-After", "-3")]) is None
    assert parse_retry_after([]) is None


@pytest.mark.parametrize(("status", "retry"), [
    (None, True), (408, True), (429, True), (500, True), (502, True), (503, True), (504, True),
    (200, False), (202, False), (400, False), (401, False), (404, False), (413, False), (422, False),
])
def test_what_is_retried(status: int | None, retry: bool) -> None:
    assert is_retryable(status) is retry


def test_callback_urls() -> None:
    assert check_callback_url(None, frozenset()) is None
    assert check_callback_url("https://hooks.example/x?y=1", frozenset()) == "https://hooks.example/x?y=1"
    allowed = frozenset({"hooks.example", "127.0.0.1:9000"})
    assert check_callback_url("http://HOOKS.example/cb", allowed)
    assert check_callback_url("http://127.0.0.1:9000/cb", allowed)
    for bad in ("http://127.0.0.1:9001/cb", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(BadRequest) as info:
            check_callback_url(bad, allowed)
        assert info.value.field == "X-Callback-Url"
    for bad in ("file:///etc/passwd", "gopher://x", "http://\u00e9.example/", "http://x/\x00", "https://:80/"):
        with pytest.raises(BadRequest) as info:
            check_callback_url(bad, frozenset())
        assert info.value.field == "X-Callback-Url"


def test_settings_come_from_the_environment_once() -> None:
    settings = AsyncSettings.from_env({"HYDRO_ASYNC_CALLBACK_HOSTS": " a.example , B.example:8080 ,",
                                       "HYDRO_ASYNC_MAX_PENDING": "5", "HYDRO_ASYNC_FSYNC": "1"})
    assert settings.callback_hosts == {"a.example", "b.example:8080"}
    assert settings.max_pending == 5 and settings.fsync
    assert AsyncSettings.from_env({}) == AsyncSettings()
