"""The router's own bound (issue 12, point 1): a stage's answer is read at most ``max_stage_response`` bytes.

Against the real HTTP server of conftest playing the gateway: a stage answering more (by its
Content-Length) is a 502 naming the stage and the option, the router never holds
more than the limit in memory, and the next call on the same router works.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hydro_serving.errors import ConfigError, UpstreamError
from hydro_serving.router.engine import Router
from hydro_serving.stack import FunctionSpec


def _router(url: str, **options: Any) -> Router:
    spec = FunctionSpec.from_dict({"name": "pipe", "lang": "router", "chain": ["big"], "options": options})
    return Router(spec, url, registry=CollectorRegistry(), rng=random.Random(1))


def test_a_stage_answer_past_the_limit_is_502_naming_the_option(fake_gateway: Any) -> None:
    size = {"n": 5000}

    def big(_call: Any) -> Any:
        return fake_gateway.Reply(body=b'"' + b"x" * size["n"] + b'"')

    fake_gateway.behaviours["big"] = big
    router = _router(fake_gateway.url, max_stage_response=1000)
    try:
        with pytest.raises(UpstreamError) as info:
            router.run(b"{}", {})
        assert info.value.stage == "big" and "max_stage_response" in info.value.message
        assert info.value.details["cause"] == "too_large"
        size["n"] = 100
        result = router.run(b"{}", {})  # the same router, the same stage: fine once the answer fits
        assert result.status == 200 and b"x" * 100 in result.body
    finally:
        router.close()


def test_max_stage_response_must_be_a_positive_integer() -> None:
    with pytest.raises(ConfigError) as info:
        _router("http://127.0.0.1:1", max_stage_response=0)
    assert info.value.field == "options.max_stage_response"
