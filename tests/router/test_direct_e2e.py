"""The router's direct path with real processes: a real gateway (local provider), real router and stage replicas.

Client -> gateway -> router replica -> stage replica (direct, leased from the gateway), and the
fallbacks to router -> gateway -> stage replica when the stage is cold, its replica was killed or
it was scaled to zero. ``X-Hydro-Stage-Timings`` says per stage whether the call was direct.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_fixtures import gateway, gateway_factory  # noqa: F401 - fixtures (they mark tests `process`)

pytestmark = pytest.mark.slow

STAGE = '''
import os


def handle(payload, context):
    """Append this stage's name to the trail; say which process served it and what credential it saw."""
    data = payload if isinstance(payload, dict) else {"input": payload}
    name = os.environ["STAGE_NAME"]
    seen = {k.lower(): v for k, v in context.headers.items()}
    return {**data, "trail": [*data.get("trail", []), name], "pid_" + name: os.getpid(),
            "auth_" + name: seen.get("authorization")}
'''


@pytest.fixture(autouse=True)
def tcp_replicas(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas on TCP (the direct path's case): on a unix socket a replica is private to its function.

    Autouse, so it runs before the gateway fixture starts the gateway that inherits the variable; the
    test of the default (private sockets, named so) gets the gateway's own default instead.
    """
    if "private_sockets" not in request.node.name:
        monkeypatch.setenv("HYDRO_REPLICA_TRANSPORT", "tcp")


def timings(headers: dict[str, str]) -> list[dict[str, Any]]:
    return json.loads(next(v for k, v in headers.items() if k.lower() == "x-hydro-stage-timings"))


@pytest.fixture
def pipeline(gateway: Any, tmp_path: Path) -> Any:  # noqa: F811 - the fixture imported above
    folder = gateway.write_handler(tmp_path / "stage", STAGE)
    for name in ("a", "b"):
        gateway.deploy(gateway.python_spec(name, folder, environment={"STAGE_NAME": name},
                                           scale={"max": 1, "concurrency": 8}))
    gateway.deploy({"name": "pipe", "lang": "router", "chain": ["a", "b"], "scale": {"min": 0, "max": 1, "idle": 300}})
    return gateway


def call(gw: Any, headers: dict[str, str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status, hdrs, body = gw.invoke("pipe", {"trail": []}, headers=headers, timeout=90)
    assert status == 200, body
    assert body["trail"] == ["a", "b"]
    return body, timings(hdrs)


def until_direct(gw: Any, limit: int = 200) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Call until both stages were called directly (the lease follows the first warm call within ~0.25 s)."""
    for _ in range(limit):
        body, stages = call(gw)
        if all(s.get("direct") for s in stages):
            return body, stages
    raise AssertionError(f"the direct path was never used: {stages}\n{gw.log()[-3000:]}")


def test_cold_stages_go_through_the_gateway_then_warm_ones_are_called_directly(pipeline: Any) -> None:
    gw = pipeline
    body, stages = call(gw, {"Authorization": "Bearer caller-secret"})
    assert [s["cold_start"] for s in stages] == [True, True]  # cold: the gateway started them
    assert not stages[0].get("direct")  # (stage 2 may be direct: the prewarm had made it ready meanwhile)
    body, stages = until_direct(gw)
    assert [s["cold_start"] for s in stages] == [False, False]
    assert len(gw.replica_pids("a")) == 1 and len(gw.replica_pids("b")) == 1  # no extra replica was started
    # a replica is a stranger: neither the router's key nor a caller's credential reaches it
    body, stages = call(gw, {"Authorization": "Bearer caller-secret"})
    assert all(s.get("direct") for s in stages)
    assert body["auth_a"] is None and body["auth_b"] is None
    # the gateway counts direct calls once the router reports them (with its next lease, or at once when idle)
    routed = gw.status("pipe")["invocationCount"]
    gw.wait_for(lambda: gw.status("a")["invocationCount"] == routed and gw.status("b")["invocationCount"] == routed,
                timeout=10, what="the direct calls reported to the gateway")
    assert gw.metric("hydro_gateway_invocations_total", function="a", status="200") == routed


def test_a_killed_replica_is_a_fallback_through_the_gateway_not_an_error(pipeline: Any) -> None:
    gw = pipeline
    call(gw)
    until_direct(gw)
    [victim] = gw.replica_pids("a")
    try:  # the replica dies (its whole process group: workers too) between two requests
        os.killpg(victim, signal.SIGKILL)
    except ProcessLookupError:
        os.kill(victim, signal.SIGKILL)
    gw.wait_for(lambda: not gw.pid_alive(victim), timeout=10, what="the replica to die")
    _, stages = call(gw)  # refused directly -> the same call through the gateway, which starts another
    assert not stages[0].get("direct")
    until_direct(gw)  # and the new replica is leased in turn
    assert len(gw.replica_pids("a")) == 1 and victim not in gw.replica_pids("a")


def test_a_stage_scaled_to_zero_is_called_through_the_gateway_which_starts_it(pipeline: Any) -> None:
    gw = pipeline
    call(gw)
    body, _ = until_direct(gw)
    old = body["pid_b"]
    status, out = gw.admin("POST", "/system/scale-function/b", {"replicas": 0})
    assert status == 202, out
    gw.wait_for(lambda: gw.replica_pids("b") == [] and not gw.pid_alive(old), timeout=20, what="b at zero")
    body, stages = call(gw)
    assert body["pid_b"] != old
    assert stages[1]["cold_start"] is True and not stages[1].get("direct")
    until_direct(gw)


def test_the_direct_path_can_be_turned_off_per_router(pipeline: Any) -> None:
    gw = pipeline
    gw.deploy({"name": "pipe", "lang": "router", "chain": ["a", "b"], "options": {"direct": False},
               "scale": {"min": 0, "max": 1, "idle": 300}})
    for _ in range(20):
        _, stages = call(gw)
        assert not any(s.get("direct") for s in stages)
    routed = gw.status("pipe")["invocationCount"]
    assert gw.status("a")["invocationCount"] == routed  # every call passed through the gateway at once


def test_replicas_on_private_sockets_are_never_leased_and_calls_go_through_the_gateway(pipeline: Any) -> None:
    """The default: each replica listens on a socket only its function (and the gateway) may open."""
    gw = pipeline
    for _ in range(15):
        _, stages = call(gw)
        assert not any(s.get("direct") for s in stages)
    routed = gw.status("pipe")["invocationCount"]
    assert gw.status("a")["invocationCount"] == routed and gw.status("b")["invocationCount"] == routed
