"""The admin API and its bad-input answers, against a real gateway process (no replica is started)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.gateway.app import ROUTES
from hydro_serving.gateway.asyncroutes import ASYNC_ROUTES
from hydro_serving.gateway.openapi import openapi_document


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_health_openapi_and_metrics_are_open(gateway: Any) -> None:
    assert gateway.request("GET", "/healthz")[0] == 200
    status, _, doc = gateway.request("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    status, _headers, text = gateway.request("GET", "/metrics")
    assert status == 200 and "hydro_gateway_invocations" in text.decode()


def test_openapi_documents_every_route() -> None:
    paths = openapi_document("0")["paths"]
    for method, path, _ in [*ROUTES, *ASYNC_ROUTES]:
        doc_path = path.replace("{path:.*}", "{path}")
        assert doc_path in paths, path
        if method != "*":
            assert method.lower() in paths[doc_path], (method, path)


def test_credentials_file_is_private(gateway: Any) -> None:
    path = gateway.state_dir / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["user"] == "admin" and len(data["token"]) >= 32


@pytest.mark.parametrize("path", ["/system/info", "/system/functions", "/system/function/x", "/system/logs?name=x"])
def test_admin_api_refuses_without_or_with_wrong_credentials(shared_gateway: Any, path: str) -> None:
    gateway = shared_gateway
    status, headers, body = gateway.request("GET", path)
    assert status == 401 and body["code"] == "unauthorized" and "WWW-Authenticate" in headers
    for bad in ({"Authorization": "Bearer nope"}, _basic("admin", "wrong"), _basic("root", "x"),
                {"Authorization": "Basic !!notbase64"}, {"Authorization": "Token abc"}):
        status, _, body = gateway.request("GET", path, headers=bad)
        assert status == 401, bad
        assert body["error"]


def test_admin_api_accepts_bearer_and_basic(gateway: Any) -> None:
    creds = json.loads((gateway.state_dir / "credentials.json").read_text())
    status, _, info = gateway.request("GET", "/system/info", headers={"Authorization": f"Bearer {creds['token']}"})
    assert status == 200 and info["provider"]["orchestration"] == "local"
    status, _, functions = gateway.request("GET", "/system/functions", headers=_basic("admin", creds["password"]))
    assert status == 200 and functions == []


def test_unknown_function_is_404_json(gateway: Any) -> None:
    status, _, body = gateway.invoke("nope", {"x": 1})
    assert status == 404 and body["function"] == "nope" and body["code"] == "not_found"
    status, body = gateway.admin("GET", "/system/function/nope")
    assert status == 404 and body["function"] == "nope"
    status, body = gateway.admin("DELETE", "/system/functions", {"functionName": "nope"})
    assert status == 404 and body["function"] == "nope"
    status, body = gateway.admin("POST", "/system/scale-function/nope", {"replicas": 1})
    assert status == 404
    status, body = gateway.admin("GET", "/system/logs?name=nope")
    assert status == 404
    status, _, body = gateway.request("GET", "/no/such/route")
    assert status == 404 and body["code"] == "not_found"
    status, _, body = gateway.request("PATCH", "/system/functions")
    assert status == 405 and body["code"] == "method_not_allowed"


@pytest.mark.parametrize(("body", "field"), [
    ([1, 2], "(body)"),
    ({"image": "x"}, "service"),
    ({"service": "Bad_Name", "hydro": {"lang": "python3"}}, "service"),
    ({"service": "a", "hydro": {"name": "b", "lang": "python3", "handler": "/tmp"}}, "service"),
    ({"service": "a", "bogus": 1, "hydro": {"lang": "python3"}}, "bogus"),
    ({"service": "a", "envVars": {"A": 1}, "hydro": {"lang": "python3"}}, "envVars.A"),
    ({"service": "a", "secrets": "s", "hydro": {"lang": "python3"}}, "secrets"),
    ({"service": "a", "hydro": "python3"}, "hydro"),
    ({"service": "a", "hydro": {"handler": "/tmp"}}, "hydro"),
    ({"service": "a", "hydro": {"lang": "python3", "scale": {"min": -1}}}, "hydro.scale.min"),
    ({"service": "a", "hydro": {"lang": "python3", "scale": {"idel": 3}}}, "hydro.scale.idel"),
    ({"service": "a", "hydro": {"lang": "python3", "timeout": "soon"}}, "hydro.timeout"),
    ({"service": "a", "hydro": {"lang": "python3"}}, "hydro.handler"),
    ({"service": "a", "hydro": {"lang": "python3", "handler": "relative/dir"}}, "hydro.handler"),
    ({"service": "a", "hydro": {"lang": "python3", "handler": "/no/such/dir"}}, "hydro.handler"),
    ({"service": "a", "image": "registry/x:1"}, "hydro.handler"),
])
def test_malformed_deployment_is_400_naming_the_field(shared_gateway: Any, body: Any, field: str) -> None:
    gateway = shared_gateway
    for method in ("POST", "PUT"):
        status, out = gateway.admin(method, "/system/functions", body)
        assert status == 400, (method, out)
        assert out["field"].startswith(field), (field, out)
        assert out["error"]


def test_deployment_body_must_be_json(shared_gateway: Any) -> None:
    gateway = shared_gateway
    auth = {"Authorization": f"Bearer {gateway.token}"}
    for raw in (b"", b"{not json", b"\xff\xfe"):
        status, _, body = gateway.http("POST", gateway.url + "/system/functions", raw, auth)
        assert status == 400 and json.loads(body)["field"] == "(body)"


def test_deploy_list_describe_scale_input_and_remove(gateway: Any, echo_dir: Path) -> None:
    spec = gateway.python_spec("echo", echo_dir, environment={"A": "1"})
    status, created = gateway.admin("POST", "/system/functions", {"service": "echo", "hydro": spec,
                                                                    "envVars": {"B": "2"}, "labels": {"team": "x"}})
    assert status == 202 and created["name"] == "echo" and created["replicas"] == 0
    assert created["envVars"] == {"A": "1", "B": "2"} and created["labels"] == {"team": "x"}
    status, again = gateway.admin("POST", "/system/functions", {"service": "echo", "hydro": spec})
    assert status == 409 and again["function"] == "echo"
    status, missing = gateway.admin("PUT", "/system/functions", {"service": "other", "hydro": {**spec,
                                                                                               "name": "other"}})
    assert status == 404 and missing["function"] == "other"
    status, listed = gateway.admin("GET", "/system/functions")
    assert [f["name"] for f in listed] == ["echo"]
    assert listed[0]["availableReplicas"] == 0 and listed[0]["invocationCount"] == 0
    assert listed[0]["hydro"]["handler"] == str(echo_dir)
    for bad in ({}, {"replicas": -1}, {"replicas": "2"}, {"replicas": True}, [3]):
        status, out = gateway.admin("POST", "/system/scale-function/echo", bad)
        assert status == 400 and out["field"] in ("replicas", "(body)"), (bad, out)
    for query, field in (("", "name"), ("?name=echo&tail=x", "tail"), ("?name=echo&tail=-2", "tail")):
        status, out = gateway.admin("GET", f"/system/logs{query}")
        assert status == 400 and out["field"] == field
    for bad in ({}, {"functionName": 3}, "echo"):
        status, out = gateway.admin("DELETE", "/system/functions", bad)
        assert status == 400 and out["field"] in ("functionName", "(body)")
    status, _ = gateway.admin("DELETE", "/system/functions", {"functionName": "echo"})
    assert status == 202
    assert gateway.admin("GET", "/system/function/echo")[0] == 404
    assert gateway.invoke("echo")[0] == 404


def test_router_needs_its_stages_deployed(gateway: Any, echo_dir: Path) -> None:
    router = {"name": "pipe", "lang": "router", "chain": ["echo", "missing"]}
    gateway.deploy(gateway.python_spec("echo", echo_dir))
    status, out = gateway.admin("POST", "/system/functions", {"service": "pipe", "hydro": router})
    assert status == 400 and out["stage"] == "missing" and out["field"] == "hydro.chain[1]"


def test_router_with_incompatible_stages_is_refused(gateway: Any, echo_dir: Path) -> None:
    first = gateway.python_spec("first", echo_dir, signature={
        "inputs": [{"name": "x", "dtype": "float64", "shape": [-1, 2]}],
        "outputs": [{"name": "label", "dtype": "string", "shape": [-1]}]})
    second = gateway.python_spec("second", echo_dir, signature={
        "inputs": [{"name": "features", "dtype": "float64", "shape": [-1, 2]}]})
    gateway.deploy(first)
    gateway.deploy(second)
    status, out = gateway.admin("POST", "/system/functions", {"service": "pipe", "hydro": {
        "name": "pipe", "lang": "router", "chain": ["first", "second"]}})
    assert status == 400, out
    assert "first" in out["error"] and "second" in out["error"] and out["function"] == "pipe"


async def _follow(provider: Any, name: str, want: int) -> list[str]:
    lines: list[str] = []
    async for line in provider.logs(name, tail=0, follow=True):
        lines.append(line)
        if len(lines) == want:
            break
    return lines


def test_local_provider_follows_logs_line_by_line(tmp_path: Path) -> None:
    """The follow loop yields whole lines only, as they are appended (no replica needed)."""
    import asyncio

    from hydro_serving.errors import ConfigError
    from hydro_serving.gateway.config import GatewayConfig
    from hydro_serving.gateway.providers.local import LocalProvider
    from hydro_serving.replica.envfile import read_env_file

    provider = LocalProvider(GatewayConfig(state_dir=tmp_path / "state"))
    log = provider.log_path("fn")
    log.write_text("old line\n")

    async def scenario() -> list[str]:
        task = asyncio.ensure_future(_follow(provider, "fn", 2))
        await asyncio.sleep(0.05)
        with open(log, "a") as fh:
            fh.write("first\nsec")
            fh.flush()
            await asyncio.sleep(0.3)
            fh.write("ond\n")
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(scenario()) == ["first", "second"]
    env = tmp_path / "env"
    env.write_text("# comment\nexport A=1\nB='two words'\n\nC=\"x=y\"\n")
    assert read_env_file(env) == {"A": "1", "B": "two words", "C": "x=y"}
    env.write_text("A=1\nbroken\n")  # strict: a bad line is an error naming the file and line (tests/replica)
    with pytest.raises(ConfigError, match="line 2"):
        read_env_file(env)
