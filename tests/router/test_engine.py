"""The real router engine against a real HTTP server on 127.0.0.1 playing the gateway (see conftest)."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hydro_serving.contract import Signature
from hydro_serving.errors import HydroError, http_error
from hydro_serving.router.engine import Router
from hydro_serving.router.tracing import parse_traceparent
from hydro_serving.stack import FunctionSpec

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def spec(chain: list, **extra: Any) -> FunctionSpec:
    return FunctionSpec.from_dict({"name": "pipe", "lang": "router", "chain": chain, **extra})


@pytest.fixture
def routers() -> Iterator[list[Router]]:
    """Routers built by a test, closed afterwards (their background pools are threads)."""
    made: list[Router] = []
    yield made
    for router in made:
        router.close()


@pytest.fixture
def make(fake_gateway, routers):
    def build(chain: list, seed: int | None = 1, **kw: Any) -> Router:
        options = kw.pop("options", {})
        router = Router(spec(chain, options=options, **kw), fake_gateway.url,
                        registry=CollectorRegistry(), rng=random.Random(seed))
        routers.append(router)
        return router

    return build


def wait_for(predicate, timeout: float = 5.0) -> bool:
    """Poll a condition (background work); bounded, never a timing assertion."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def error_of(exc: HydroError) -> tuple[int, dict[str, Any], dict[str, str]]:
    return http_error(exc)


def metric(router: Router, name: str, labels: dict[str, str]) -> float:
    return router.metrics.registry.get_sample_value(name, labels) or 0.0


# ---- chain and variants -----------------------------------------------------------------------


def test_chain_order_and_raw_pass_through(fake_gateway, make) -> None:
    fake_gateway.behaviours.update(a=fake_gateway.appender("a"), b=fake_gateway.appender("b"))
    # the last stage answers bytes in its own formatting: the router must not re-encode them
    raw = b'{"done" :  true,\n "n": 1.50}'
    fake_gateway.behaviours["c"] = lambda call: fake_gateway.Reply(body=raw, headers={
        "Content-Type": "application/json; charset=utf-8"})
    router = make(["a", "b", "c"])
    result = router.run(b'{"trail": []}', {"Content-Type": "application/json"})
    assert result.body == raw
    assert result.status == 200
    assert result.content_type == "application/json; charset=utf-8"
    assert json.loads(fake_gateway.invoked("b")[0].body) == {"trail": ["a"]}
    assert json.loads(fake_gateway.invoked("c")[0].body) == {"trail": ["a", "b"]}
    # stage 1 got the caller's bytes untouched
    assert fake_gateway.invoked("a")[0].body == b'{"trail": []}'
    for index, name in enumerate(["a", "b", "c"], start=1):
        headers = fake_gateway.invoked(name)[0].headers
        assert headers["x-hydro-pipeline"] == "pipe"
        assert headers["x-hydro-stage"] == str(index)
        assert 0 < float(headers["x-timeout"]) <= 60


def test_only_the_chosen_variant_runs(fake_gateway, make) -> None:
    for name in ("feat", "v1", "v2", "post"):
        fake_gateway.behaviours[name] = fake_gateway.appender(name)
    router = make(["feat", {"variants": {"v1": 90, "v2": 10}}, "post"], seed=42, options={"prewarm": False})
    n = 400
    for _ in range(n):
        result = router.run(b"{}", {})
        trail = json.loads(result.body)["trail"]
        assert trail[0] == "feat" and trail[2] == "post"
        assert trail[1] in ("v1", "v2")
    v1, v2 = len(fake_gateway.invoked("v1")), len(fake_gateway.invoked("v2"))
    assert v1 + v2 == n  # exactly one variant per request
    assert len(fake_gateway.invoked("feat")) == n
    assert 0.85 <= v1 / n <= 0.95


def test_sticky_key_sends_a_user_to_one_variant(fake_gateway, make) -> None:
    for name in ("v1", "v2"):
        fake_gateway.behaviours[name] = fake_gateway.appender(name)
    router = make([{"variants": {"v1": 50, "v2": 50}}])
    seen = {json.loads(router.run(b"{}", {"X-Hydro-Key": "user-7"}).body)["trail"][0] for _ in range(20)}
    assert len(seen) == 1
    # the key travels on so nested routers stay sticky too
    assert fake_gateway.calls[-1].headers["x-hydro-key"] == "user-7"


# ---- shadows ----------------------------------------------------------------------------------


def test_failing_shadow_never_changes_the_response(fake_gateway, make) -> None:
    fake_gateway.behaviours.update(a=fake_gateway.appender("a"), b=fake_gateway.appender("b"))
    fake_gateway.behaviours["cand"] = lambda call: fake_gateway.Reply(500, b'{"error": "candidate broke"}')
    fake_gateway.behaviours["gone"] = lambda call: fake_gateway.DROP
    router = make(["a", {"function": "b", "shadow": ["cand", "gone"]}])
    result = router.run(b"{}", {})
    assert json.loads(result.body) == {"trail": ["a", "b"]}
    assert result.status == 200
    assert wait_for(lambda: len(fake_gateway.invoked("cand")) == 1 and len(fake_gateway.invoked("gone")) == 1)
    # the shadow got a copy of the stage's input (stage 1's output), marked as a shadow
    shadow_call = fake_gateway.invoked("cand")[0]
    assert json.loads(shadow_call.body) == {"trail": ["a"]}
    assert shadow_call.headers["x-hydro-shadow"] == "true"
    labels = {"pipeline": "pipe", "stage": "2", "function": "cand", "outcome": "error"}
    assert wait_for(lambda: metric(router, "hydro_router_shadow_requests_total", labels) == 1)
    labels = {"pipeline": "pipe", "stage": "2", "function": "gone", "outcome": "connection"}
    assert wait_for(lambda: metric(router, "hydro_router_shadow_requests_total", labels) == 1)


def test_slow_shadow_is_not_waited_for(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    fake_gateway.behaviours["lazy"] = fake_gateway.slow(30, fake_gateway.appender("lazy"))
    router = make([{"function": "a", "shadow": ["lazy"]}])
    result = router.run(b"{}", {})  # returns while the shadow is still sleeping on the server
    assert json.loads(result.body) == {"trail": ["a"]}
    assert wait_for(lambda: len(fake_gateway.invoked("lazy")) == 1)
    assert metric(router, "hydro_router_shadow_requests_total",
                  {"pipeline": "pipe", "stage": "1", "function": "lazy", "outcome": "ok"}) == 0
    fake_gateway.release.set()  # let the shadow finish so close() does not wait on it


# ---- failures ---------------------------------------------------------------------------------


def test_stage_400_keeps_status_and_names_the_stage(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    body = {"error": "missing field 'features'", "code": "invalid_input", "field": "features"}
    fake_gateway.behaviours["b"] = lambda call: fake_gateway.Reply(400, json.dumps(body).encode())
    fake_gateway.behaviours["c"] = fake_gateway.appender("c")
    router = make(["a", "b", "c"])
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {})
    status, payload, headers = error_of(info.value)
    assert status == 400
    assert payload["stage"] == "b"
    assert payload["function"] == "pipe"
    assert payload["field"] == "features"
    assert "stage 2 (b)" in payload["error"] and "missing field 'features'" in payload["error"]
    assert payload["details"]["body"] == body
    assert payload["details"]["stage_index"] == 2
    assert fake_gateway.invoked("c") == []
    timings = json.loads(headers["X-Hydro-Stage-Timings"])
    assert [t["variant"] for t in timings] == ["a", "b"]
    assert timings[1]["error"] == 400
    # a 4xx says nothing about the stage's health
    assert router.breakers.get("b").state == "closed"


def test_dropped_connection_is_502_then_breaker_opens_and_answers_503_at_once(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    fake_gateway.behaviours["b"] = lambda call: fake_gateway.DROP
    router = make(["a", "b"], options={"breaker_failures": 3, "breaker_cooldown": "60s"})
    for _ in range(3):
        with pytest.raises(HydroError) as info:
            router.run(b"{}", {})
        status, payload, _ = error_of(info.value)
        assert status == 502
        assert payload["stage"] == "b"
        assert payload["details"]["cause"] == "connection_lost"
        assert "stage 2 (b) lost the connection" in payload["error"]
    assert len(fake_gateway.invoked("b")) == 3  # a lost connection is never retried
    calls_before = len(fake_gateway.calls)
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {})
    status, payload, headers = error_of(info.value)
    assert status == 503
    assert payload["stage"] == "b"
    assert payload["details"]["breaker"] == "open"
    assert int(headers["Retry-After"]) >= 1
    assert len(fake_gateway.calls) == calls_before  # not even stage 1 was called
    assert metric(router, "hydro_router_breaker_state", {"pipeline": "pipe", "function": "b"}) == 2


def test_breaker_half_opens_and_closes_when_the_stage_is_back(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = lambda call: fake_gateway.Reply(500, b'{"error": "down"}')
    router = make(["a"], options={"breaker_failures": 1, "breaker_cooldown": "0.2s"})
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {})
    assert error_of(info.value)[0] == 502
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {})
    assert error_of(info.value)[0] == 503
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    assert wait_for(lambda: router.breakers.get("a").state == "half_open")
    assert json.loads(router.run(b"{}", {}).body) == {"trail": ["a"]}
    assert router.breakers.get("a").state == "closed"


def test_connection_refused_is_retried_with_backoff_then_502(routers) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    router = Router(spec(["a"], options={"connect_retries": 2, "retry_backoff": "1ms"}), f"http://127.0.0.1:{dead}",
                    registry=CollectorRegistry())
    routers.append(router)
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {})
    status, payload, _ = error_of(info.value)
    assert status == 502
    assert payload["stage"] == "a"
    assert payload["details"]["cause"] == "connect"
    assert payload["details"]["attempts"] == 3
    assert metric(router, "hydro_router_connect_retries_total", {"pipeline": "pipe", "function": "a"}) == 2


def test_stage_timeout_is_504_naming_it(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    fake_gateway.behaviours["b"] = fake_gateway.slow(30, fake_gateway.appender("b"))
    router = make(["a", "b"])
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {"X-Timeout": "0.5"})
    status, payload, headers = error_of(info.value)
    assert status == 504
    assert payload["stage"] == "b"
    assert payload["details"]["cause"] == "timeout"
    assert len(fake_gateway.invoked("b")) == 1  # not retried
    assert json.loads(headers["X-Hydro-Stage-Timings"])[1]["error"] == "timeout"


def test_stage_timeout_caps_the_stage(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.slow(30, fake_gateway.appender("a"))
    router = make([{"function": "a", "timeout": "300ms"}])
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {})  # the router's own timeout is 60s; the stage's 0.3s applies
    assert error_of(info.value)[0] == 504
    assert float(fake_gateway.invoked("a")[0].headers["x-timeout"]) <= 0.3


def test_stage_5xx_and_garbage_are_502(fake_gateway, make) -> None:
    fake_gateway.behaviours["boom"] = lambda call: fake_gateway.Reply(500, b'{"error": "kaput"}')
    fake_gateway.behaviours["junk"] = lambda call: fake_gateway.Reply(200, b"<html>not json")
    payloads = {}
    for name in ("boom", "junk"):
        router = make([name])
        with pytest.raises(HydroError) as info:
            router.run(b"{}", {})
        status, payloads[name], _ = error_of(info.value)
        assert status == 502
        assert payloads[name]["stage"] == name
    assert "kaput" in payloads["boom"]["error"]
    assert payloads["boom"]["details"]["body"] == {"error": "kaput"}
    assert "not valid JSON" in payloads["junk"]["error"]


def test_bad_timeout_header_is_400_before_any_call(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    router = make(["a"])
    with pytest.raises(HydroError) as info:
        router.run(b"{}", {"X-Timeout": "soon"})
    assert error_of(info.value)[0] == 400 and info.value.field == "X-Timeout"
    assert fake_gateway.calls == []


# ---- validation -------------------------------------------------------------------------------


def test_missing_field_is_400_naming_it_before_any_call(fake_gateway, make) -> None:
    fake_gateway.behaviours.update(feat=fake_gateway.appender("feat"), clf=fake_gateway.appender("clf"))
    signature = {"inputs": [{"name": "Title1", "dtype": "string", "shape": [-1]},
                            {"name": "Title2", "dtype": "string", "shape": [-1]}],
                 "outputs": [{"name": "features", "dtype": "float64", "shape": [-1, 4]}]}
    router = make(["feat", "clf"], options={"stage_signatures": {"feat": signature}})
    with pytest.raises(HydroError) as info:
        router.run(json.dumps([{"Title1": "iPhone 5"}]).encode(), {})
    status, payload, _ = error_of(info.value)
    assert status == 400
    assert payload["field"] == "[0].Title2"
    assert "Title2" in payload["error"]
    assert payload["stage"] == "feat"
    with pytest.raises(HydroError) as info:
        router.run(b"{not json", {})
    assert error_of(info.value)[0] == 400 and info.value.field == "$"
    assert fake_gateway.calls == []  # nothing called, not even a prewarm
    good = json.dumps([{"Title1": "iPhone 5", "Title2": "iPhone 5"}]).encode()
    assert json.loads(router.run(good, {}).body)["trail"] == ["feat", "clf"]


def test_signatures_can_be_passed_directly(fake_gateway, routers) -> None:
    sig = Signature.from_dict({"inputs": [{"name": "x", "dtype": "float64"}]})
    router = Router(spec(["a"]), fake_gateway.url, registry=CollectorRegistry(), signatures={"a": sig})
    routers.append(router)
    with pytest.raises(HydroError) as info:
        router.run(b'{"y": 1}', {})
    assert info.value.field == "x"


# ---- observability ----------------------------------------------------------------------------


def test_traceparent_propagated_with_new_span_per_stage(fake_gateway, make) -> None:
    fake_gateway.behaviours.update(a=fake_gateway.appender("a"), b=fake_gateway.appender("b"))
    router = make(["a", "b"])
    result = router.run(b"{}", {"traceparent": TRACE, "tracestate": "vendor=1"})
    spans = []
    for name in ("a", "b"):
        ctx = parse_traceparent(fake_gateway.invoked(name)[0].headers["traceparent"])
        assert ctx is not None and ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert fake_gateway.invoked(name)[0].headers["tracestate"] == "vendor=1"
        spans.append(ctx.span_id)
    answered = parse_traceparent(result.headers["traceparent"])
    assert answered is not None and answered.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert len({*spans, answered.span_id, "00f067aa0ba902b7"}) == 4


def test_trace_created_when_absent(fake_gateway, make) -> None:
    fake_gateway.behaviours.update(a=fake_gateway.appender("a"), b=fake_gateway.appender("b"))
    router = make(["a", "b"])
    router.run(b"{}", {})
    ids = {parse_traceparent(fake_gateway.invoked(n)[0].headers["traceparent"]).trace_id for n in ("a", "b")}
    assert len(ids) == 1


def test_stage_timings_header_and_metrics(fake_gateway, make) -> None:
    for name in ("feat", "v1", "v2"):
        fake_gateway.behaviours[name] = fake_gateway.appender(name)
    # no prewarm: the fake gateway would count a prewarm as the function's first (cold) call
    router = make(["feat", {"variants": {"v1": 50, "v2": 50}}], options={"prewarm": False})
    first = json.loads(router.run(b"{}", {"X-Hydro-Key": "k"}).headers["X-Hydro-Stage-Timings"])
    second = json.loads(router.run(b"{}", {"X-Hydro-Key": "k"}).headers["X-Hydro-Stage-Timings"])
    assert [t["stage"] for t in first] == [1, 2]
    assert first[0]["name"] == "feat" and first[0]["variant"] == "feat"
    assert first[1]["name"] == "v1|v2" and first[1]["variant"] in ("v1", "v2")
    assert all(isinstance(t["ms"], float) and t["ms"] >= 0 for t in first)
    assert [t["cold_start"] for t in first] == [True, True]  # the fake gateway's first call per function
    assert [t["cold_start"] for t in second] == [False, False]
    variant = first[1]["variant"]
    assert metric(router, "hydro_router_stage_requests_total",
                  {"pipeline": "pipe", "stage": "2", "function": variant, "outcome": "ok"}) == 2
    assert metric(router, "hydro_router_stage_latency_seconds_count",
                  {"pipeline": "pipe", "stage": "1", "function": "feat"}) == 2
    assert metric(router, "hydro_router_stage_cold_starts_total",
                  {"pipeline": "pipe", "stage": "1", "function": "feat"}) == 1


# ---- prewarm ----------------------------------------------------------------------------------


def test_later_stages_prewarmed_once_while_cold_not_on_warm_requests(fake_gateway, make) -> None:
    for name in ("a", "b", "c"):
        fake_gateway.behaviours[name] = fake_gateway.appender(name)
    router = make(["a", "b", "c"])
    router.run(b"{}", {})
    assert wait_for(lambda: len(fake_gateway.prewarmed("b")) == 1 and len(fake_gateway.prewarmed("c")) == 1)
    assert fake_gateway.prewarmed("a") == []  # stage 1 is called at once anyway
    prewarm = fake_gateway.prewarmed("c")[0]
    assert prewarm.headers["x-hydro-pipeline"] == "pipe" and prewarm.headers["x-hydro-stage"] == "3"
    for _ in range(5):
        router.run(b"{}", {})
    time.sleep(0.05)  # give a (wrongly) submitted prewarm the chance to arrive before counting
    assert len(fake_gateway.prewarmed("b")) == 1 and len(fake_gateway.prewarmed("c")) == 1


def test_prewarm_can_be_turned_off(fake_gateway, make) -> None:
    for name in ("a", "b"):
        fake_gateway.behaviours[name] = fake_gateway.appender(name)
    router = make(["a", "b"], options={"prewarm": False})
    router.run(b"{}", {})
    router.close()  # drains the background pools: anything submitted would have been sent
    assert fake_gateway.prewarmed("b") == []


# ---- Knative: stages addressed by URL template, no gateway --------------------------------------


def test_stage_url_template_addresses_stages_directly_without_prewarm(fake_gateway, routers) -> None:
    """On Knative each stage is its own Service; the template stands in for cluster-local URLs.

    The fake gateway's /function/<name> paths play the stages' Service roots here, because no
    cluster DNS exists on this machine.
    """
    fake_gateway.behaviours.update(a=fake_gateway.appender("a"), b=fake_gateway.appender("b"))
    router = Router(spec(["a", "b"]), "", registry=CollectorRegistry(),
                    stage_url_template=fake_gateway.url + "/function/{name}")
    routers.append(router)
    result = router.run(b'{"x": 1}', {"Content-Type": "application/json"})
    assert result.status == 200
    assert json.loads(result.body)["trail"] == ["a", "b"]
    assert not any(call.prewarm for call in fake_gateway.calls)  # a bare Service would run a prewarm as a request



def test_a_callers_short_deadline_never_opens_the_breaker(fake_gateway, make) -> None:
    """Attacker: five requests with X-Timeout 2 ms must not switch the stage off for everyone."""
    fake_gateway.behaviours["a"] = fake_gateway.slow(0.3, fake_gateway.appender("a"))
    router = make(["a"], options={"breaker_failures": 2, "breaker_cooldown": "60s"})
    for _ in range(5):
        with pytest.raises(HydroError) as info:
            router.run(b"{}", {"X-Timeout": "0.002"})
        assert error_of(info.value)[0] == 504
    assert router.breakers.get("a").state == "closed"
    assert json.loads(router.run(b"{}", {}).body) == {"trail": ["a"]}  # an honest caller still gets through


def test_a_stage_504_after_a_short_caller_deadline_does_not_count(fake_gateway, make) -> None:
    body = {"error": "handler exceeded its deadline", "code": "timeout"}
    fake_gateway.behaviours["a"] = lambda call: fake_gateway.Reply(504, json.dumps(body).encode())
    router = make(["a"], options={"breaker_failures": 2, "breaker_cooldown": "60s"})
    for _ in range(4):
        with pytest.raises(HydroError):
            router.run(b"{}", {"X-Timeout": "5"})
    assert router.breakers.get("a").state == "closed"
    for _ in range(2):  # the same 504s with the router's own full budget are the stage's fault
        with pytest.raises(HydroError):
            router.run(b"{}", {})
    assert router.breakers.get("a").state == "open"


def test_a_timeout_with_the_stage_full_budget_counts(fake_gateway, make) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.slow(30, fake_gateway.appender("a"))
    router = make([{"function": "a", "timeout": "200ms"}], options={"breaker_failures": 2, "breaker_cooldown": "60s"})
    for _ in range(2):
        with pytest.raises(HydroError) as info:
            router.run(b"{}", {"X-Timeout": "10"})  # shorter than the router's 60 s, longer than the stage's own
        assert error_of(info.value)[0] == 504
    assert router.breakers.get("a").state == "open"


def test_inputs_that_make_a_handler_raise_never_open_the_breaker(fake_gateway, make) -> None:
    """Attacker: bad inputs that crash the handler are the caller's fault, not the stage's health."""
    body = {"error": "handler raised ValueError: bad", "code": "handler_error"}
    fake_gateway.behaviours["a"] = lambda call: fake_gateway.Reply(500, json.dumps(body).encode())
    router = make(["a"], options={"breaker_failures": 2, "breaker_cooldown": "60s"})
    for _ in range(6):
        with pytest.raises(HydroError) as info:
            router.run(b"{}", {})
        assert error_of(info.value)[0] == 502
    assert router.breakers.get("a").state == "closed"
    down = b'{"error": "no replica", "code": "unavailable"}'
    fake_gateway.behaviours["a"] = lambda call: fake_gateway.Reply(503, down)
    for _ in range(2):
        with pytest.raises(HydroError):
            router.run(b"{}", {})
    assert router.breakers.get("a").state == "open"
