"""The gateway app in-process: its HTTP API through aiohttp's test client, with a fake provider.

``create_app(config, provider)`` is served by aiohttp's TestServer on 127.0.0.1 and called over
real HTTP; the provider is tests/gateway/fakes.py's FakeProvider, which stands in for process
spawning to keep this layer fast (its replicas are in-process aiohttp servers that speak the
runtime's health/ready contract and echo what they receive). What the real local provider adds
(processes, sandboxing, logs on disk) is tested end to end in test_api.py, test_scale_to_zero.py
and test_crash_recovery.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from hydro_serving.gateway.app import create_app
from hydro_serving.gateway.auth import read_credentials
from hydro_serving.gateway.config import GatewayConfig
from tests.gateway.fakes import FakeProvider, admin_headers, until

pytestmark = pytest.mark.asyncio


@dataclass
class Harness:
    client: TestClient
    provider: FakeProvider
    state_dir: Path
    handler_dir: Path

    @property
    def admin(self) -> dict[str, str]:
        return admin_headers(self.state_dir)

    def deployment(self, name: str = "echo", **hydro: Any) -> dict[str, Any]:
        scale = {"min": 0, "max": 3, "idle": "5m", "concurrency": 4, **hydro.pop("scale", {})}
        return {"service": name, "hydro": {"lang": "python3", "handler": str(self.handler_dir), "scale": scale,
                                           **hydro}}

    async def call(self, method: str, path: str, body: Any = None, *, admin: bool = True,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """One request; JSON bodies in and out (bytes are sent as they are)."""
        sent = {**(self.admin if admin else {}), **(headers or {})}
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        async with self.client.request(method, path, data=data, headers=sent) as resp:
            raw = await resp.read()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return resp.status, dict(resp.headers), parsed

    async def deploy(self, name: str = "echo", **hydro: Any) -> dict[str, Any]:
        status, _, body = await self.call("POST", "/system/functions", self.deployment(name, **hydro))
        assert status == 202, body
        return body


def make_config(state_dir: Path, **settings: Any) -> GatewayConfig:
    return GatewayConfig(state_dir=state_dir, cold_start_timeout=10.0, stop_grace=1.0, discover_interval=0,
                         **settings)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest_asyncio.fixture
async def gw(tmp_path: Path, provider: FakeProvider) -> AsyncIterator[Harness]:
    handler_dir = tmp_path / "echo"
    handler_dir.mkdir()
    (handler_dir / "handler.py").write_text("def handle(payload, context):\n    return payload\n")
    state_dir = tmp_path / "state"
    app = create_app(make_config(state_dir), provider)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Harness(client, provider, state_dir, handler_dir)
    assert provider.closed and provider.live() == []  # the gateway's shutdown stopped every replica


def assert_json_error(status: int, body: Any, want_status: int, **fields: str) -> None:
    """A 4xx/5xx in the one error shape: JSON, a message, a code, the named field; no traceback."""
    assert status == want_status, body
    assert isinstance(body, dict) and body["error"] and body["code"], body
    for key, value in fields.items():
        assert body.get(key) == value, body
    assert "Traceback" not in json.dumps(body)


# ---- open endpoints and auth ------------------------------------------------------------------------


async def test_health_openapi_and_metrics_are_open(gw: Harness) -> None:
    assert (await gw.call("GET", "/healthz", admin=False))[0] == 200
    status, _, doc = await gw.call("GET", "/openapi.json", admin=False)
    assert status == 200 and doc["openapi"].startswith("3.")
    status, _, text = await gw.call("GET", "/metrics", admin=False)
    assert status == 200 and b"hydro_gateway_invocations" in text


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/system/info", None),
    ("GET", "/system/functions", None),
    ("POST", "/system/functions", "deployment"),
    ("PUT", "/system/functions", "deployment"),
    ("DELETE", "/system/functions", {"functionName": "echo"}),
    ("GET", "/system/function/echo", None),
    ("DELETE", "/system/function/echo", None),
    ("POST", "/system/scale-function/echo", {"replicas": 2}),
    ("GET", "/system/logs?name=echo", None),
])
async def test_the_admin_api_needs_the_admin_credentials(gw: Harness, method: str, path: str, body: Any) -> None:
    await gw.deploy()
    if body == "deployment":
        body = gw.deployment(environment={"CHANGED": "by an anonymous caller"})
    wrong_password = "Basic " + base64.b64encode(b"admin:guess").decode()
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": wrong_password},
                    {"Authorization": "Basic !!!"}, {"Authorization": "Token x"}):
        status, reply_headers, reply = await gw.call(method, path, body, admin=False, headers=headers)
        assert_json_error(status, reply, 401, code="unauthorized")
        assert "WWW-Authenticate" in reply_headers
    # nothing the anonymous caller sent had an effect
    status, _, described = await gw.call("GET", "/system/function/echo")
    assert status == 200 and described["envVars"] == {} and described["status"]["generation"] == 1
    assert gw.provider.started == [] and gw.provider.removed == []


async def test_basic_auth_with_the_admin_password_works(gw: Harness) -> None:
    password = read_credentials(gw.state_dir).password
    basic = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
    status, _, info = await gw.call("GET", "/system/info", admin=False, headers={"Authorization": basic})
    assert status == 200 and info["provider"]["orchestration"] == "fake" and info["functions"] == 0


# ---- deploy, list, describe, update, remove -----------------------------------------------------------


async def test_deploy_list_describe_update_and_remove(gw: Harness) -> None:
    created = await gw.deploy(environment={"VERSION": "v1"})
    assert created["name"] == "echo" and created["replicas"] == 0 and created["envVars"] == {"VERSION": "v1"}
    assert gw.provider.deployed == [("echo", 1)] and gw.provider.started == []  # scale.min 0: nothing runs

    status, _, listed = await gw.call("GET", "/system/functions")
    assert status == 200 and [f["name"] for f in listed] == ["echo"]
    status, _, described = await gw.call("GET", "/system/function/echo")
    assert status == 200 and described["hydro"]["lang"] == "python3" and described["status"]["generation"] == 1

    status, _, again = await gw.call("POST", "/system/functions", gw.deployment(environment={"VERSION": "v1"}))
    assert_json_error(status, again, 409, function="echo")

    status, _, same = await gw.call("PUT", "/system/functions", gw.deployment(environment={"VERSION": "v1"}))
    assert status == 202 and same["changed"] is False and same["status"]["generation"] == 1
    status, _, updated = await gw.call("PUT", "/system/functions", gw.deployment(environment={"VERSION": "v2"}))
    assert status == 202 and updated["changed"] is True and updated["status"]["generation"] == 2
    assert updated["envVars"] == {"VERSION": "v2"} and gw.provider.deployed[-1] == ("echo", 2)

    status, _, removed = await gw.call("DELETE", "/system/functions", {"functionName": "echo"})
    assert status == 202 and removed == {"removed": "echo"} and gw.provider.removed == ["echo"]
    status, _, gone = await gw.call("GET", "/system/function/echo")
    assert_json_error(status, gone, 404, function="echo")
    assert (await gw.call("GET", "/system/functions"))[2] == []


async def test_update_and_remove_of_an_unknown_function_are_404(gw: Harness) -> None:
    status, _, body = await gw.call("PUT", "/system/functions", gw.deployment("ghost"))
    assert_json_error(status, body, 404, function="ghost")
    status, _, body = await gw.call("DELETE", "/system/function/ghost")
    assert_json_error(status, body, 404, function="ghost")
    status, _, body = await gw.call("POST", "/system/scale-function/ghost", {"replicas": 1})
    assert_json_error(status, body, 404, function="ghost")
    assert gw.provider.deployed == []


async def test_deployments_survive_a_gateway_restart_at_zero_replicas(tmp_path: Path) -> None:
    handler_dir = tmp_path / "fn"
    handler_dir.mkdir()
    state_dir = tmp_path / "state"
    first = FakeProvider()
    async with TestClient(TestServer(create_app(make_config(state_dir), first), host="127.0.0.1")) as client:
        gw = Harness(client, first, state_dir, handler_dir)
        await gw.deploy("keep")
        assert (await gw.call("POST", "/function/keep", {"x": 1}))[0] == 200
    second = FakeProvider()
    async with TestClient(TestServer(create_app(make_config(state_dir), second), host="127.0.0.1")) as client:
        gw = Harness(client, second, state_dir, handler_dir)
        status, _, listed = await gw.call("GET", "/system/functions")
        assert status == 200 and [(f["name"], f["replicas"]) for f in listed] == [("keep", 0)]
        assert second.deployed == [("keep", 1)] and second.started == []
        status, headers, reply = await gw.call("POST", "/function/keep", {"x": 2}, admin=False)
        assert status == 200 and reply["payload"] == {"x": 2} and headers["X-Cold-Start"] == "true"


# ---- invoke -----------------------------------------------------------------------------------------------


async def test_invoke_from_zero_cold_starts_one_replica_then_stays_warm(gw: Harness) -> None:
    await gw.deploy()
    status, headers, reply = await gw.call("POST", "/function/echo/sub/path?q=1", {"a": 1}, admin=False,
                                           headers={"X-Trace": "t1"})
    assert status == 200 and headers["X-Cold-Start"] == "true" and "X-Queue-Time-Ms" in headers
    assert reply["payload"] == {"a": 1} and reply["path"] == "/sub/path" and reply["query"] == {"q": "1"}
    assert reply["headers"]["X-Trace"] == "t1" and reply["method"] == "POST"
    status, headers, again = await gw.call("GET", "/function/echo", admin=False)
    assert status == 200 and headers["X-Cold-Start"] == "false" and again["replica"] == reply["replica"]
    assert len(gw.provider.started) == 1
    status, _, metrics = await gw.call("GET", "/metrics", admin=False)
    assert b'hydro_gateway_cold_starts_total{function="echo"} 1.0' in metrics
    assert b'hydro_gateway_invocations_total{function="echo",status="200"} 2.0' in metrics


async def test_concurrent_invocations_from_zero_share_one_cold_start(gw: Harness) -> None:
    await gw.deploy()
    gw.provider.auto_ready = False  # hold the replica "loading" until every request is waiting
    calls = [asyncio.ensure_future(gw.call("POST", "/function/echo", {"i": i}, admin=False)) for i in range(10)]
    await until(lambda: len(gw.provider.started) == 1, what="the cold start")
    status, _, described = await gw.call("GET", "/system/function/echo")
    assert status == 200 and described["availableReplicas"] == 0
    gw.provider.load_all()
    results = await asyncio.gather(*calls)
    assert [status for status, _, _ in results] == [200] * 10
    assert sorted(reply["payload"]["i"] for _, _, reply in results) == list(range(10))
    assert len(gw.provider.started) == 1


async def test_the_admin_credentials_never_reach_a_function(gw: Harness) -> None:
    await gw.deploy()
    status, _, reply = await gw.call("POST", "/function/echo", {"a": 1}, admin=True)
    assert status == 200 and "Authorization" not in reply["headers"]


async def test_unknown_function_is_404_json_and_starts_nothing(gw: Harness) -> None:
    status, _, body = await gw.call("POST", "/function/nope", {"x": 1}, admin=False)
    assert_json_error(status, body, 404, function="nope", code="not_found")
    status, _, body = await gw.call("GET", "/no/such/route", admin=False)
    assert_json_error(status, body, 404, code="not_found")
    status, _, body = await gw.call("PATCH", "/system/functions")
    assert_json_error(status, body, 405, code="method_not_allowed")
    assert gw.provider.started == []


async def test_a_body_over_the_gateway_limit_is_413_json_and_reaches_no_replica(tmp_path: Path) -> None:
    provider = FakeProvider()
    state_dir = tmp_path / "state"
    app = create_app(make_config(state_dir, max_body=1024), provider)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        gw = Harness(client, provider, state_dir, tmp_path)
        await gw.deploy()
        status, _, body = await gw.call("POST", "/function/echo", {"pad": "x" * 4096}, admin=False)
        assert_json_error(status, body, 413, code="payload_too_large")
        assert all(fake.served == 0 for fake in provider.replicas)
        status, _, reply = await gw.call("POST", "/function/echo", {"small": 1}, admin=False)
        assert status == 200 and reply["payload"] == {"small": 1}


async def test_a_replica_that_cannot_start_is_a_502_naming_the_cause_to_the_operator_only(gw: Harness) -> None:
    await gw.deploy()
    gw.provider.fail_starts = 2
    status, headers, body = await gw.call("POST", "/function/echo", {"x": 1}, admin=False)
    assert_json_error(status, body, 502, function="echo")
    assert "the model file is corrupt" not in body["error"]  # an anonymous caller learns no internals
    assert body["request_id"] == headers["X-Request-Id"] and body["request_id"] in body["error"]
    status, _, body = await gw.call("POST", "/function/echo", {"x": 1}, admin=True)
    assert_json_error(status, body, 502, function="echo")
    assert "the model file is corrupt" in body["error"]  # the operator reads the cause
    status, _, reply = await gw.call("POST", "/function/echo", {"x": 2}, admin=False)  # the next one starts anew
    assert status == 200 and reply["payload"] == {"x": 2} and len(gw.provider.started) == 3


async def test_a_crashed_replica_is_replaced_by_the_next_request(gw: Harness) -> None:
    await gw.deploy()
    first = (await gw.call("POST", "/function/echo", {}, admin=False))[2]["replica"]
    (replica,) = [r for r in gw.provider.started if r.id == first]
    await gw.provider.crash(replica)
    status, headers, reply = await gw.call("POST", "/function/echo", {}, admin=False)
    assert status == 200 and reply["replica"] != first and headers["X-Cold-Start"] == "true"


async def test_prewarm_starts_a_replica_without_invoking(gw: Harness) -> None:
    await gw.deploy()
    status, _, body = await gw.call("POST", "/function/echo", None, admin=False, headers={"X-Hydro-Prewarm": "true"})
    assert status == 202 and body == {"function": "echo", "status": "starting"}
    for _ in range(1000):
        status, _, described = await gw.call("GET", "/system/function/echo")
        if described["availableReplicas"] == 1:
            break
    assert described["availableReplicas"] == 1 and described["invocationCount"] == 0
    assert len(gw.provider.started) == 1 and gw.provider.replicas[0].served == 0  # started, never invoked
    status, _, body = await gw.call("POST", "/function/echo", None, admin=False, headers={"X-Hydro-Prewarm": "true"})
    assert status == 202 and body["status"] == "ready" and len(gw.provider.started) == 1


# ---- scale, redeploy, removal while busy -------------------------------------------------------------------


async def test_scale_function_starts_and_drains_replicas(gw: Harness) -> None:
    await gw.deploy()
    status, _, body = await gw.call("POST", "/system/scale-function/echo", {"replicas": 2})
    assert status == 202 and body == {"name": "echo", "replicas": 2}

    async def available() -> int:
        return (await gw.call("GET", "/system/function/echo"))[2]["availableReplicas"]

    for _ in range(1000):
        if await available() == 2:
            break
    assert await available() == 2 and len(gw.provider.started) == 2
    status, _, body = await gw.call("POST", "/system/scale-function/echo", {"replicas": 9})
    assert status == 202 and body["replicas"] == 3  # clamped to scale.max
    for _ in range(1000):
        if await available() == 3:
            break
    assert len(gw.provider.started) == 3
    status, _, body = await gw.call("POST", "/system/scale-function/echo", {"replicas": 0})
    assert status == 202 and body["replicas"] == 0
    await until(lambda: gw.provider.live("echo") == [], what="every replica drained")


@pytest.mark.parametrize("body", [{"replicas": -1}, {"replicas": "2"}, {"replicas": True}, {"replicas": 1.5},
                                  {}, [], {"replica": 2}])
async def test_scale_function_refuses_a_bad_count_naming_the_field(gw: Harness, body: Any) -> None:
    await gw.deploy()
    status, _, reply = await gw.call("POST", "/system/scale-function/echo", body)
    assert_json_error(status, reply, 400, field="replicas", function="echo")
    assert gw.provider.started == []


async def test_redeploy_moves_traffic_to_the_new_generation(gw: Harness) -> None:
    await gw.deploy(environment={"VERSION": "v1"})
    before = (await gw.call("POST", "/function/echo", {}, admin=False))[2]
    assert before["generation"] == 1
    status, _, _ = await gw.call("PUT", "/system/functions", gw.deployment(environment={"VERSION": "v2"}))
    assert status == 202
    await until(lambda: any(r.generation == 2 for r in gw.provider.started), what="the generation-2 replica")
    await until(lambda: (before["replica"], 0) in gw.provider.stopped, what="generation 1 to drain")
    after = (await gw.call("POST", "/function/echo", {}, admin=False))[2]
    assert after["generation"] == 2 and after["replica"] != before["replica"]


async def test_removal_lets_an_in_flight_request_finish(gw: Harness) -> None:
    await gw.deploy()
    busy = asyncio.ensure_future(gw.call("POST", "/function/echo", {"hold": "r1"}, admin=False))
    await gw.provider.held("r1")
    removal = asyncio.ensure_future(gw.call("DELETE", "/system/function/echo"))
    for _ in range(1000):  # until the removal has reached the gateway: the function is gone at once
        status, _, body = await gw.call("POST", "/function/echo", {}, admin=False)
        if status == 404:
            break
    assert_json_error(status, body, 404, function="echo")
    assert not removal.done() and gw.provider.removed == []  # still draining the request in flight
    gw.provider.release("r1")
    status, _, reply = await busy
    assert status == 200 and reply["payload"] == {"hold": "r1"}
    status, _, _ = await removal
    assert status == 202 and gw.provider.removed == ["echo"]
    assert [inflight for _, inflight in gw.provider.stopped] == [0]


async def test_logs_are_ndjson_of_the_providers_lines(gw: Harness) -> None:
    await gw.deploy()
    await gw.call("POST", "/function/echo", {}, admin=False)
    async with gw.client.get("/system/logs?name=echo&tail=1", headers=gw.admin) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
        raw = await resp.read()
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert len(lines) == 1 and lines[0]["name"] == "echo" and "started" in lines[0]["text"]
    status, _, body = await gw.call("GET", "/system/logs?name=echo&tail=x")
    assert_json_error(status, body, 400, field="tail")
    status, _, body = await gw.call("GET", "/system/logs")
    assert_json_error(status, body, 400, field="name")


# ---- malformed admin requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    (b"", "(body)"),
    (b"{", "(body)"),
    (b"\xff\xfe", "(body)"),
    (b"[]", "(body)"),
    (b'"echo"', "(body)"),
    ({"hydro": {"lang": "python3"}}, "service"),
    ({"service": "Bad_Name", "hydro": {"lang": "python3"}}, "service"),
    ({"service": "x" * 64, "hydro": {"lang": "python3"}}, "service"),
    ({"service": "echo", "hydro": {"lang": "python3"}, "surprise": 1}, "surprise"),
    ({"service": "echo", "hydro": {"lang": "python3"}, "envVars": {"A": 1}}, "envVars.A"),
    ({"service": "echo", "hydro": {"lang": "python3"}, "secrets": "one"}, "secrets"),
    ({"service": "echo", "hydro": "python3"}, "hydro"),
    ({"service": "echo", "hydro": {"name": "other", "lang": "python3"}}, "service"),
    ({"service": "echo"}, "hydro"),
])
async def test_malformed_deployments_are_400_naming_the_field(gw: Harness, body: Any, field: str) -> None:
    status, _, reply = await gw.call("POST", "/system/functions", body)
    assert_json_error(status, reply, 400, field=field)
    assert gw.provider.deployed == [] and (await gw.call("GET", "/system/functions"))[2] == []


@pytest.mark.parametrize(("hydro", "key"), [
    ({"lang": "python3", "scale": {"min": -1}}, "scale.min"),
    ({"lang": "python3", "scale": {"max": "many"}}, "scale.max"),
    ({"lang": "python3", "timeout": "soon"}, "timeout"),
    ({"lang": "python3", "unknown_key": True}, "unknown_key"),
])
async def test_a_bad_function_spec_is_400_naming_its_key(gw: Harness, hydro: dict[str, Any], key: str) -> None:
    status, _, reply = await gw.call("POST", "/system/functions", {"service": "echo", "hydro": hydro})
    assert_json_error(status, reply, 400)
    assert reply["field"].endswith(key), reply  # the path of the key at fault (hydro.scale.min today)
    assert gw.provider.deployed == []


@pytest.mark.parametrize("body", [b"", b"nope", b"[]", {}, {"functionName": ""}, {"functionName": 3}])
async def test_a_malformed_removal_is_400_and_removes_nothing(gw: Harness, body: Any) -> None:
    await gw.deploy()
    status, _, reply = await gw.call("DELETE", "/system/functions", body)
    assert status == 400 and reply["field"] in ("(body)", "functionName"), reply
    assert gw.provider.removed == [] and (await gw.call("GET", "/system/function/echo"))[0] == 200
