"""Endpoint leases (a router's direct path to its stages' replicas), in-process with the fake provider.

The gateway app runs over real HTTP (aiohttp's TestServer); its replicas are tests/gateway/fakes.py's
in-process servers, because what is under test is who may lease which endpoints and what the
gateway counts, not process spawning (the real local provider is in tests/router/test_direct_e2e.py).
The fake provider is named ``local`` here where a test needs a provider whose replicas a router
can reach, since that is the provider the gateway hands endpoints for.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from hydro_serving.gateway.app import create_app
from hydro_serving.gateway.appkeys import GATEWAY_KEY
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.replica.contract import ENDPOINTS_HEADER, ROUTER_DIRECT_ENV, ROUTER_KEY_ENV
from tests.gateway.fakes import FakeProvider, admin_headers

pytestmark = pytest.mark.asyncio

LEASE = {ENDPOINTS_HEADER: "lease"}


class Harness:
    def __init__(self, client: TestClient, provider: FakeProvider, state_dir: Path, handler_dir: Path) -> None:
        self.client, self.provider, self.state_dir, self.handler_dir = client, provider, state_dir, handler_dir

    @property
    def gateway(self) -> Any:
        return self.client.server.app[GATEWAY_KEY]

    def router_key(self, router: str) -> str:
        return self.gateway.replica_credentials(router)[ROUTER_KEY_ENV]

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})} if data is not None else dict(headers or {})
        async with self.client.request(method, path, data=data, headers=sent) as resp:
            raw = await resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None

    async def deploy(self, name: str, **hydro: Any) -> None:
        if hydro.get("lang") != "router":
            hydro = {"lang": "python3", "handler": str(self.handler_dir),
                     "scale": {"min": 0, "max": 3, "idle": "5m", "concurrency": 4}, **hydro}
        status, _, body = await self.call("POST", "/system/functions", {"service": name, "hydro": hydro},
                                          admin_headers(self.state_dir))
        assert status == 202, body

    async def lease(self, stage: str, key: str | None, report: Any = None) -> tuple[int, Any]:
        headers = {**LEASE, **({"Authorization": f"Bearer {key}"} if key else {})}
        status, _, body = await self.call("POST", f"/function/{stage}", report, headers)
        return status, body


@pytest_asyncio.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    handler_dir = tmp_path / "echo"
    handler_dir.mkdir()
    (handler_dir / "handler.py").write_text("def handle(payload, context):\n    return payload\n")
    provider = FakeProvider()
    provider.name = "local"  # replicas on this machine: the provider the gateway leases endpoints of
    config = GatewayConfig(state_dir=tmp_path / "state", cold_start_timeout=10.0, stop_grace=1.0, discover_interval=0)
    async with TestClient(TestServer(create_app(config, provider), host="127.0.0.1")) as client:
        harness = Harness(client, provider, tmp_path / "state", handler_dir)
        for name in ("a", "b"):
            await harness.deploy(name)
        await harness.deploy("r1", lang="router", chain=["a"])
        await harness.deploy("r2", lang="router", chain=["b"])
        yield harness


async def test_a_router_leases_its_warm_stage_and_reports_its_direct_calls(gw: Harness) -> None:
    key = gw.router_key("r1")
    assert gw.gateway.replica_credentials("r1")[ROUTER_DIRECT_ENV] == "1"
    assert ROUTER_DIRECT_ENV not in gw.gateway.replica_credentials("a")  # only routers get it
    status, body = await gw.lease("a", key)
    assert status == 200, body
    assert body["endpoints"] == [] and body["reason"] == "cold"  # no replica: the router calls through us
    assert gw.provider.live("a") == []  # a lease never starts a replica
    status, _, _ = await gw.call("POST", "/function/a", {"x": 1})  # a call through the gateway warms it
    assert status == 200
    report = {"calls": {"200": 5, "500": 1}, "seconds": 0.01, "pipeline": "forged",
              "stages": [{"stage": "1", "shadow": False, "errors": 1, "seconds": [0.001] * 6}]}
    status, body = await gw.lease("a", key, report)
    assert status == 200, body
    replica = gw.provider.live("a")[0].replica
    assert body["reason"] is None and body["router"] == "r1"
    assert body["endpoints"] == [{"url": replica.endpoint, "replica": replica.id, "concurrency": 4}]
    assert 0 < body["ttl"] <= 1.0
    status, _, out = await gw.call("GET", "/system/function/a", headers=admin_headers(gw.state_dir))
    assert out["invocationCount"] == 1 + 6  # the call through the gateway and the six reported
    async with gw.client.get("/metrics") as resp:
        text = await resp.text()
    assert 'hydro_gateway_invocations_total{function="a",status="500"} 1.0' in text
    # the stage series carry the router the key belongs to, not the name the report gave
    assert 'hydro_pipeline_stage_duration_seconds_count{function="a",pipeline="r1",stage="1"} 6.0' in text
    assert 'hydro_pipeline_stage_errors_total{function="a",pipeline="r1",stage="1"} 1.0' in text
    assert "forged" not in text


async def test_no_credential_is_401_and_nobody_but_the_stages_own_router_gets_endpoints(gw: Harness) -> None:
    """A hostile function or caller cannot learn where replicas listen."""
    assert (await gw.lease("a", None))[0] == 401  # anonymous (a stage function has no key at all)
    status, body = await gw.lease("a", "hk_0123456789abcdef_" + "x" * 43)  # a forged key
    assert status == 401, body
    status, body = await gw.lease("a", gw.router_key("r2"))  # another router's key: not its stage
    assert status == 403, body
    assert "not valid for function 'a'" in body["error"]
    status, body = await gw.lease("a", gw.gateway.credentials.token)  # the admin token is not a router
    assert status == 403, body
    status, _, made = await gw.call("POST", "/system/keys", {"name": "user", "functions": ["a"]},
                                    admin_headers(gw.state_dir))
    assert status == 201
    status, body = await gw.lease("a", made["key"])  # a user's key for the stage: it has the gateway
    assert status == 403, body
    assert "only routers lease endpoints" in body["error"]
    assert "endpoints" not in body


async def test_a_removed_routers_key_stops_working(gw: Harness) -> None:
    key = gw.router_key("r1")
    status, _, _ = await gw.call("DELETE", "/system/functions", {"functionName": "r1"}, admin_headers(gw.state_dir))
    assert status == 202
    assert (await gw.lease("a", key))[0] == 401


@pytest.mark.parametrize(("report", "field"), [
    (b"not json", "(body)"),
    ([1, 2], "(body)"),
    ({"calls": {"200": -1}}, "calls.200"),
    ({"calls": {"200": True}}, "calls.200"),
    ({"calls": {"abc": 1}}, "calls.abc"),
    ({"calls": {"99": 1}}, "calls.99"),
    ({"calls": []}, "calls"),
    ({"seconds": "1"}, "seconds"),
    ({"evil": 1}, "evil"),
    ({"stages": {}}, "stages"),
    ({"stages": [{"stage": "x"}]}, "stages[0].stage"),
    ({"stages": [{"stage": "1", "shadow": "yes"}]}, "stages[0].shadow"),
    ({"stages": [{"stage": "1", "seconds": [-1]}]}, "stages[0].seconds"),
    ({"stages": [{"stage": "1", "seconds": [0.1] * 5000}]}, "stages[0].seconds"),
    ({"stages": [{"stage": "1", "errors": -3}]}, "stages[0].errors"),
    ({"stages": [{"stage": "1", "pipeline": "someone-else"}]}, "stages[0]"),
])
async def test_a_malformed_report_is_400_naming_the_field_and_counts_nothing(gw: Harness, report: Any,
                                                                            field: str) -> None:
    status, body = await gw.lease("a", gw.router_key("r1"), report)
    assert status == 400, body
    assert body["field"] == field
    assert "Traceback" not in json.dumps(body)
    status, _, out = await gw.call("GET", "/system/function/a", headers=admin_headers(gw.state_dir))
    assert out["invocationCount"] == 0


async def test_an_oversized_report_is_413(gw: Harness) -> None:
    status, body = await gw.lease("a", gw.router_key("r1"), b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert status == 413, body


async def test_stages_with_a_rate_limit_or_sampling_and_other_providers_get_no_endpoints(gw: Harness) -> None:
    """What the gateway does at its door (rate limits, payload samples) keeps every call passing through it."""
    await gw.deploy("limited", rate={"rps": 100})
    await gw.deploy("sampled", monitoring={"sample": 1.0})
    await gw.deploy("r3", lang="router", chain=["limited", "sampled", "a"])
    key = gw.router_key("r3")
    for stage in ("limited", "sampled", "a"):
        assert (await gw.call("POST", f"/function/{stage}", {"x": 1}))[0] == 200
    reasons = {stage: (await gw.lease(stage, key))[1] for stage in ("limited", "sampled", "a")}
    assert (reasons["limited"]["reason"], reasons["limited"]["endpoints"]) == ("rate", [])
    assert (reasons["sampled"]["reason"], reasons["sampled"]["endpoints"]) == ("monitoring", [])
    assert len(reasons["a"]["endpoints"]) == 1
    gw.provider.name = "docker"  # replicas elsewhere: the router must go through the gateway
    status, body = await gw.lease("a", key)
    assert (status, body["reason"], body["endpoints"]) == (200, "provider", [])
    assert ROUTER_DIRECT_ENV not in gw.gateway.replica_credentials("r3")


async def test_a_lease_keeps_the_leased_replica_from_idling(gw: Harness) -> None:
    assert (await gw.call("POST", "/function/a", {"x": 1}))[0] == 200
    replica = gw.provider.live("a")[0].replica
    replica.last_used = 0.0  # as if idle for ages
    assert (await gw.lease("a", gw.router_key("r1")))[0] == 200
    assert replica.last_used > 0.0


async def test_a_protected_stage_still_refuses_external_callers_without_a_key(gw: Harness) -> None:
    """Leases change nothing at the door: a stage with ``auth: key`` is 401 to a caller without one."""
    await gw.deploy("secret", auth="key")
    await gw.deploy("r4", lang="router", chain=["secret"])
    assert (await gw.call("POST", "/function/secret", {"x": 1}))[0] == 401
    assert (await gw.lease("secret", None))[0] == 401
    status, body = await gw.lease("secret", gw.router_key("r4"))
    assert status == 200 and body["reason"] == "cold", body


async def test_a_drained_replica_outlives_its_last_lease(gw: Harness) -> None:
    """A router may call a leased replica until its lease lapses: scaling to zero stops it only after."""
    assert (await gw.call("POST", "/function/a", {"x": 1}))[0] == 200
    fake = gw.provider.live("a")[0]
    assert (await gw.lease("a", gw.router_key("r1")))[0] == 200
    leased_until = fake.replica.leased_until
    status, _, _ = await gw.call("POST", "/system/scale-function/a", {"replicas": 0}, admin_headers(gw.state_dir))
    assert status == 202
    stopped_at = None
    give_up = time.monotonic() + 20
    while stopped_at is None and time.monotonic() < give_up:
        await asyncio.sleep(0.02)
        if not fake.alive:
            stopped_at = time.monotonic()
    assert stopped_at is not None and stopped_at >= leased_until
    status, body = await gw.lease("a", gw.router_key("r1"))
    assert status == 200 and body["endpoints"] == []


async def test_a_stage_called_only_directly_still_scales_up(gw: Harness) -> None:
    """The gateway sees no request of its own; the router's reported direct load makes it add a replica."""
    assert (await gw.call("POST", "/function/a", {"x": 1}))[0] == 200
    [first] = gw.provider.live("a")
    key = gw.router_key("r1")
    status, body = await gw.lease("a", key, {"inflight": {first.replica.endpoint: 2}})
    assert status == 200 and len(body["endpoints"]) == 1
    assert len(gw.provider.live("a")) == 1  # below scale.concurrency (4): no new replica
    status, body = await gw.lease("a", key, {"inflight": {first.replica.endpoint + "/": 4}})
    assert status == 200
    give_up = time.monotonic() + 10
    while len([f for f in gw.provider.live("a") if f.loaded.is_set()]) < 2 and time.monotonic() < give_up:
        await asyncio.sleep(0.02)
    assert len(gw.provider.live("a")) == 2
    status, body = await gw.lease("a", key)
    assert len(body["endpoints"]) == 2  # the router spreads its direct calls over both from now on


async def test_a_routers_report_never_undoes_a_scale_down(gw: Harness) -> None:
    """While a stage drains to zero (an operator's scale-down), a router's report of its past load starts nothing."""
    assert (await gw.call("POST", "/function/a", {"x": 1}))[0] == 200
    [first] = gw.provider.live("a")
    key = gw.router_key("r1")
    assert (await gw.lease("a", key))[0] == 200
    status, _, _ = await gw.call("POST", "/system/scale-function/a", {"replicas": 0}, admin_headers(gw.state_dir))
    assert status == 202
    status, body = await gw.lease("a", key, {"inflight": {first.replica.endpoint: 4}})
    assert status == 200 and body["endpoints"] == []  # draining: not leased
    give_up = time.monotonic() + 20
    while gw.provider.live("a") and time.monotonic() < give_up:
        await asyncio.sleep(0.02)
    assert gw.provider.live("a") == [] and gw.provider.start_calls == 1
