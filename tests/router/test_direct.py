"""The router's direct path against real HTTP servers on 127.0.0.1: a gateway stand-in that grants
leases and a replica stand-in (see conftest for why the gateway is a stand-in here; the real gateway
and replicas are in test_direct_e2e.py).

What a real gateway and runtime cannot be made to do on cue is what these tests need: a replica that
answers "loading", drops the connection mid-call, or holds calls while the test counts them.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hydro_serving.errors import HydroError
from hydro_serving.router.engine import Router
from hydro_serving.stack import FunctionSpec


class Replica:
    """A stage replica's root: answers by ``behaviour(headers, body) -> (status, body) | "drop"``."""

    def __init__(self, behaviour: Callable[[dict[str, str], bytes], Any]) -> None:
        self.behaviour = behaviour
        self.calls: list[dict[str, str]] = []
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                replica.calls.append({**headers, "path": self.path})
                result = replica.behaviour(headers, body)
                if result == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, out = result
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def trail(name: str) -> Callable[[dict[str, str], bytes], Any]:
    def run(_headers: dict[str, str], body: bytes) -> Any:
        data = json.loads(body)
        return 200, json.dumps({**data, "trail": [*data.get("trail", []), name]}).encode()

    return run


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for replica in made:
        replica.close()


@pytest.fixture
def setup(fake_gateway: Any, replicas: list[Replica]) -> Callable[..., tuple[Router, Replica, list[Any]]]:
    """A router with the direct path on, a gateway that leases one replica of stage ``a`` (concurrency given)."""
    built: list[Router] = []
    leases: list[Any] = []

    def make(behaviour: Callable[[dict[str, str], bytes], Any], concurrency: int = 8) -> tuple[Router, Replica,
                                                                                              list[Any]]:
        replica = Replica(behaviour)
        replicas.append(replica)

        def gateway_a(call: Any) -> Any:
            if call.headers.get("x-hydro-endpoints") == "lease":
                leases.append((call.headers.get("authorization"), json.loads(call.body or b"{}")))
                answer = {"function": "a", "ttl": 0.2, "reason": None,
                          "endpoints": [{"url": replica.url, "replica": "a-1", "concurrency": concurrency}]}
                return fake_gateway.Reply(body=json.dumps(answer).encode())
            return fake_gateway.appender("a-via-gateway")(call)

        fake_gateway.behaviours["a"] = gateway_a
        spec = FunctionSpec.from_dict({"name": "pipe", "lang": "router", "chain": ["a"]})
        router = Router(spec, fake_gateway.url, registry=CollectorRegistry(), rng=random.Random(1), direct=True)
        router.client.key = router.client.direct.key = "hk_router_key"  # as HYDRO_ROUTER_KEY would set
        built.append(router)
        return router, replica, leases

    yield make
    for router in built:
        router.close()


def run(router: Router, headers: dict[str, str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = router.run(b'{"trail": []}', {"Content-Type": "application/json", **(headers or {})})
    return json.loads(result.body), json.loads(result.headers["X-Hydro-Stage-Timings"])


def test_a_leased_replica_is_called_directly_without_any_credential(setup: Any, fake_gateway: Any) -> None:
    router, replica, leases = setup(trail("a-direct"))
    body, timings = run(router, {"Authorization": "Bearer caller-secret"})
    assert body["trail"] == ["a-direct"] and timings[0]["direct"] is True
    assert leases[0][0] == "Bearer hk_router_key"  # the lease carries the router's key ...
    assert "authorization" not in replica.calls[0]  # ... the replica gets neither it nor the caller's
    assert replica.calls[0]["path"] == "/"  # the replica's root, whatever the function is called
    assert fake_gateway.invoked("a") == [c for c in fake_gateway.invoked("a") if c.headers.get("x-hydro-endpoints")]


def test_direct_calls_are_reported_with_the_next_lease(setup: Any) -> None:
    router, _, leases = setup(trail("a-direct"))
    for _ in range(5):
        run(router)
    router.client.direct.flush()
    reported = sum(int(n) for _, report in leases for n in report.get("calls", {}).values())
    samples = sum(len(s["seconds"]) for _, report in leases for s in report.get("stages", []))
    assert reported == 5 and samples == 5
    assert all(s["stage"] == "1" and s["shadow"] is False for _, r in leases for s in r.get("stages", []))


def test_a_replica_reloading_its_model_is_called_through_the_gateway(setup: Any) -> None:
    loading = json.dumps({"error": "function 'a' is loading", "code": "unavailable", "function": "a",
                          "details": {"status": "loading"}}).encode()
    router, replica, _ = setup(lambda _h, _b: (503, loading))
    body, timings = run(router)
    assert body["trail"] == ["a-via-gateway"] and not timings[0].get("direct")
    assert len(replica.calls) == 1


def test_a_stage_503_of_its_own_is_not_retried_through_the_gateway(setup: Any, fake_gateway: Any) -> None:
    own = json.dumps({"error": "overloaded", "code": "unavailable", "function": "a"}).encode()
    router, _, _ = setup(lambda _h, _b: (503, own))
    with pytest.raises(HydroError) as info:
        run(router)
    assert info.value.status == 503
    assert [c for c in fake_gateway.invoked("a") if not c.headers.get("x-hydro-endpoints")] == []


def test_a_connection_lost_mid_call_is_502_and_never_run_again(setup: Any, fake_gateway: Any) -> None:
    router, replica, _ = setup(lambda _h, _b: "drop")
    with pytest.raises(HydroError) as info:
        run(router)
    assert info.value.status == 502 and info.value.details["cause"] == "connection_lost"
    assert len(replica.calls) == 1
    assert [c for c in fake_gateway.invoked("a") if not c.headers.get("x-hydro-endpoints")] == []


def test_a_refused_connection_falls_back_to_the_gateway(setup: Any) -> None:
    router, replica, _ = setup(trail("a-direct"))
    replica.close()  # the replica is gone: its port refuses
    body, timings = run(router)
    assert body["trail"] == ["a-via-gateway"] and not timings[0].get("direct")


def test_calls_past_the_replicas_concurrency_go_through_the_gateway(setup: Any) -> None:
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def held(headers: dict[str, str], body: bytes) -> Any:
        entered.release()
        gate.wait(10)
        return trail("a-direct")(headers, body)

    router, replica, leases = setup(held, concurrency=1)
    first: list[Any] = []
    worker = threading.Thread(target=lambda: first.append(run(router)))
    worker.start()
    assert entered.acquire(timeout=10)  # one direct call in flight: the replica's concurrency is used up
    body, timings = run(router)
    assert body["trail"] == ["a-via-gateway"] and not timings[0].get("direct")
    gate.set()
    worker.join(10)
    assert first[0][0]["trail"] == ["a-direct"]
    router.client.direct.flush()  # the gateway hears that the replica was full: it may scale the stage up
    assert {replica.url: 1} in [report.get("inflight") for _, report in leases]


def test_no_lease_without_the_gateways_word(fake_gateway: Any) -> None:
    """A router not told it runs beside its stages (Docker, Knative, a remote gateway) never asks for one."""
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    spec = FunctionSpec.from_dict({"name": "pipe", "lang": "router", "chain": ["a"]})
    router = Router(spec, fake_gateway.url, registry=CollectorRegistry())
    try:
        router.run(b"{}", {})
        assert router.client.direct is None
        assert not any(c.headers.get("x-hydro-endpoints") for c in fake_gateway.calls)
    finally:
        router.close()


def test_a_refused_lease_means_the_gateway_path(fake_gateway: Any) -> None:
    def gateway_a(call: Any) -> Any:
        if call.headers.get("x-hydro-endpoints"):
            return fake_gateway.Reply(403, b'{"error": "not a router key"}')
        return fake_gateway.appender("a")(call)

    fake_gateway.behaviours["a"] = gateway_a
    spec = FunctionSpec.from_dict({"name": "pipe", "lang": "router", "chain": ["a"]})
    router = Router(spec, fake_gateway.url, registry=CollectorRegistry(), direct=True)
    try:
        for _ in range(3):
            assert json.loads(router.run(b"{}", {}).body)["trail"] == ["a"]
        assert len([c for c in fake_gateway.calls if c.headers.get("x-hydro-endpoints")]) == 1  # asked once
    finally:
        router.close()
