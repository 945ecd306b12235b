"""Rate limits at the gateway (issue 12, point 3), through a real gateway process and a real replica.

1000 requests paced at five times a function's rate: the excess gets 429 (with ``Retry-After`` and the
IETF ``RateLimit-Policy``/``RateLimit`` fields) within 5% of what a token bucket admits over the time
the requests actually took, the rest 200; another client's bucket is untouched; the refusals are
counted in ``/metrics`` under the function label only. Clients are told apart by their address
(``per: ip``, and ``per: key`` for callers without an API key): loopback aliases 127.0.0.x give
each client its own address.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

RPS = 20.0
BURST = 20
SENT = 1000
PACE = 5 * RPS  # requests per second sent: five times the rate
THREADS = 10


def _connection(gw: Any, source: str) -> contextlib.closing[http.client.HTTPConnection]:
    return contextlib.closing(http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30,
                                                         source_address=(source, 0)))


def _call(conn: http.client.HTTPConnection, name: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("POST", f"/function/{name}", body=b"{}", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def _paced_burst(gw: Any, name: str, source: str) -> tuple[list[tuple[int, dict[str, str], bytes]], float]:
    """SENT requests at PACE per second from ``source``; returns the answers and the seconds they spanned."""
    results: list[Any] = [None] * SENT
    sent_at: list[float] = [0.0] * SENT
    start = time.monotonic() + 0.2

    def worker(k: int) -> None:
        with _connection(gw, source) as conn:
            for i in range(k, SENT, THREADS):
                delay = start + i / PACE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent_at[i] = time.monotonic()
                results[i] = _call(conn, name)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, max(sent_at) - min(sent_at)


def test_five_times_the_rate_gets_429_for_the_excess_per_client(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("echo", echo_dir, rate={"rps": RPS, "burst": BURST, "per": "ip"}))
    with _connection(gateway, "127.0.0.3") as warm:  # start the replica from another client's bucket
        assert _call(warm, "echo")[0] == 200

    results, span = _paced_burst(gateway, "echo", "127.0.0.1")
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    admitted = statuses.count(200)
    expected = BURST + RPS * span  # a full bucket, then the refill over the time the requests took
    refused, expected_refused = SENT - admitted, SENT - expected
    assert abs(refused - expected_refused) <= 0.05 * expected_refused, (admitted, expected, span)

    ok = next(headers for status, headers, _ in results if status == 200)
    assert ok["ratelimit-policy"] == f'"echo";q={BURST};w=1'
    assert ok["ratelimit"].startswith('"echo";r=')
    _, headers, body = next(r for r in results if r[0] == 429)
    error = json.loads(body)
    assert error["code"] == "too_many_requests" and error["field"] == "rate" and error["function"] == "echo"
    assert int(headers["retry-after"]) >= 1 and headers["ratelimit"].startswith('"echo";r=0;')

    # another client (address) has its own full bucket: the limit is per caller, not for everyone
    with _connection(gateway, "127.0.0.2") as other:
        assert [_call(other, "echo")[0] for _ in range(BURST)] == [200] * BURST

    assert gateway.metric("hydro_gateway_rate_limited_total", function="echo") == refused
    rate_lines = [line for line in gateway.metrics().splitlines() if line.startswith("hydro_gateway_rate_limited")]
    assert all(line.startswith('hydro_gateway_rate_limited_total{function="echo"}')
               or line.startswith('hydro_gateway_rate_limited_created{function="echo"}') for line in rate_lines)


def test_rate_per_function_is_shared_and_keyless_callers_share_their_address(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("shared", echo_dir, rate={"rps": 0.5, "burst": 3, "per": "function"}))
    gateway.deploy(gateway.python_spec("keyed", echo_dir, rate={"rps": 0.5, "burst": 2}))  # per: key (default)
    answers = []
    for source in ("127.0.0.1", "127.0.0.2"):
        with _connection(gateway, source) as conn:
            answers += [_call(conn, "shared")[0] for _ in range(2)]
    assert answers == [200, 200, 200, 429]  # one bucket for everybody
    with _connection(gateway, "127.0.0.1") as conn:  # no API key: the caller's address is its key
        assert [_call(conn, "keyed")[0] for _ in range(3)] == [200, 200, 429]
    with _connection(gateway, "127.0.0.2") as conn:
        assert [_call(conn, "keyed")[0] for _ in range(2)] == [200, 200]


def test_rate_is_checked_by_the_schema(gateway: Any, echo_dir: Path) -> None:
    for rate, field in (({"rps": 0}, "hydro.rate.rps"), ({"rps": 5, "per": "user"}, "hydro.rate.per"),
                        ({"rps": 5, "burst": 0}, "hydro.rate.burst"), ({"burst": 5}, "hydro.rate")):
        status, out = gateway.admin("POST", "/system/functions",
                                    {"service": "bad", "hydro": gateway.python_spec("bad", echo_dir, rate=rate)})
        assert status == 400 and out["field"] == field, (rate, out)


def test_per_key_limits_hold_per_key(tmp_path: Path, echo_dir: Path) -> None:
    """``per: key`` through the gateway's real app, in process, with a real replica and real API keys.

    Each key draws from its own bucket; a caller without a key draws from its address's bucket; a key
    that does not authenticate (another key's id with a forged secret) cannot spend its owner's bucket.
    """
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from hydro_serving.gateway.app import create_app
    from hydro_serving.gateway.config import GatewayConfig

    state = tmp_path / "state"

    async def scenario() -> dict[str, list[int]]:
        client = TestClient(TestServer(create_app(GatewayConfig(state_dir=state, discover_interval=0))))
        await client.start_server()
        try:
            admin = {"Authorization": "Bearer " + json.loads((state / "credentials.json").read_text())["token"]}
            spec = {"name": "keyed", "lang": "python3", "handler": str(echo_dir),
                    "scale": {"min": 0, "max": 1, "idle": 300, "concurrency": 8},
                    "rate": {"rps": 0.01, "burst": 2, "per": "key"}}
            resp = await client.post("/system/functions", json={"service": "keyed", "hydro": spec}, headers=admin)
            assert resp.status == 202, await resp.text()
            keys = {}
            for who in ("alice", "bob"):
                resp = await client.post("/system/keys", json={"name": who, "functions": ["keyed"]}, headers=admin)
                assert resp.status in (200, 201), await resp.text()
                keys[who] = (await resp.json())["key"]
            key_id = keys["bob"].split("_")[1]
            forged = f"hk_{key_id}_{'A' * 43}"  # bob's id, not bob's secret
            out: dict[str, list[int]] = {}
            for who, n in (("alice", 3), ("forged", 1), ("bob", 2), ("no key", 3)):
                token = keys.get(who, forged if who == "forged" else None)
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                out[who] = []
                for _ in range(n):
                    async with client.post("/function/keyed", json={}, headers=headers) as r:
                        await r.read()
                        out[who].append(r.status)
            return out
        finally:
            await client.close()

    statuses = asyncio.run(scenario())
    # an open function serves the forged key as a keyless caller: from its address's bucket, never from bob's
    assert statuses == {"alice": [200, 200, 429], "forged": [200], "bob": [200, 200], "no key": [200, 429, 429]}
