"""FunctionPool (the scaler) against a fake provider: the decisions, each in milliseconds.

The fake provider (tests/gateway/fakes.py) stands in for process spawning: its replicas are
real aiohttp servers on 127.0.0.1 in the test's event loop, so the pool's readiness probes and
the requests are real HTTP, but a replica "starts" in a millisecond. ``acquire``/``release``
are what one gateway request does around its forward; holding an acquired replica is "a request
in flight". Time never passes by sleeping: ``reap(now)`` is handed a future ``now``, and
readiness is a switch the test flips. The same behaviours are proved end to end, with real
processes, in test_scale_to_zero.py and test_crash_recovery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from hydro_serving.errors import HydroError, NotFound, ServiceUnavailable, UpstreamError
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.deployment import Deployment, parse_deployment
from hydro_serving.gateway.metrics import GatewayMetrics
from hydro_serving.gateway.scaler import FunctionPool
from tests.gateway.fakes import FakeProvider, until

pytestmark = pytest.mark.asyncio

NAME = "echo"


def deployment(scale: dict[str, Any] | None = None, **hydro: Any) -> Deployment:
    """A python3 function's deployment as the gateway parses it from POST /system/functions."""
    return parse_deployment({"service": NAME, "hydro": {"lang": "python3", "handler": "./echo",
                                                         "scale": {"min": 0, "max": 4, "idle": "5m",
                                                                   "concurrency": 8, **(scale or {})},
                                                         **hydro}})


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest_asyncio.fixture
async def make_pool(tmp_path: Path, provider: FakeProvider,
                    session: aiohttp.ClientSession) -> AsyncIterator[Callable[..., FunctionPool]]:
    """``make_pool(**scale)``: a pool of generation 1 at zero replicas; every pool is closed at teardown."""
    pools: list[FunctionPool] = []
    metrics = GatewayMetrics()

    def make(cold_start_timeout: float = 10.0, **scale: Any) -> FunctionPool:
        config = GatewayConfig(state_dir=tmp_path / "state", cold_start_timeout=cold_start_timeout, stop_grace=1.0)
        pool = FunctionPool(deployment(scale), 1, provider, session, metrics.for_function(NAME), config)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close("shutdown", drain=False)
    await provider.close()


async def settle() -> None:
    """One loop turn: the done-callbacks of tasks that just finished run (a finished start stays counted
    by the pool's active count until its callback has run)."""
    await asyncio.sleep(0)


async def warm(pool: FunctionPool) -> Any:
    """One ready replica (started by a first request, released at once)."""
    replica, cold, _ = await pool.acquire()
    assert cold
    pool.release(replica)
    return replica


# ---- cold start -------------------------------------------------------------------------------------


async def test_concurrent_requests_from_zero_share_one_start(make_pool: Callable[..., FunctionPool],
                                                             provider: FakeProvider) -> None:
    provider.auto_ready = False
    pool = make_pool()
    waiters = [asyncio.ensure_future(pool.acquire()) for _ in range(20)]
    await until(lambda: pool.queued == 20 and len(provider.started) == 1, what="20 queued requests")
    assert all(not w.done() for w in waiters)  # nobody gets a replica that is not ready
    provider.load_all()
    results = await asyncio.gather(*waiters)
    assert len(provider.started) == 1
    assert {replica.id for replica, _, _ in results} == {provider.started[0].id}
    assert all(cold and waited is not None and waited >= 0 for _, cold, waited in results)
    assert pool.queued == 0 and pool.replicas[0].inflight == 20
    for replica, _, _ in results:
        pool.release(replica)
    again, cold, waited = await pool.acquire()  # warm now: no start, no wait
    assert (again.id, cold, waited) == (provider.started[0].id, False, None)


async def test_a_replica_that_dies_while_starting_fails_the_waiters_with_its_cause(
        make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    pool = make_pool()
    provider.fail_starts = 1
    waiters = [asyncio.ensure_future(pool.acquire()) for _ in range(3)]
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, UpstreamError) and r.status == 502 for r in results), results
    assert all("the model file is corrupt" in str(r) for r in results)
    assert pool.replicas == [] and len(provider.started) == 1
    replica, cold, _ = await pool.acquire()  # the next request tries again, and this start works
    assert cold and replica.id == provider.started[1].id


async def test_a_replica_that_never_becomes_ready_is_a_bounded_503_and_is_stopped(
        make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    provider.auto_ready = False
    provider.ready_wait_max = 0.01  # probes come back at once, so the pool's own deadline is what ends the wait
    pool = make_pool(cold_start_timeout=0.2)
    with pytest.raises(ServiceUnavailable) as caught:
        await pool.acquire()
    assert caught.value.status == 503 and caught.value.headers.get("Retry-After")
    await until(lambda: len(provider.stopped) == 1, what="the unready replica to be stopped")
    assert pool.replicas == []


# ---- draining -------------------------------------------------------------------------------------


async def test_drain_lets_in_flight_requests_finish_and_routes_no_new_ones(
        make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    pool = make_pool()
    first = await warm(pool)
    busy, _, _ = await pool.acquire()  # a request in flight on it
    assert busy is first
    drain = asyncio.ensure_future(pool.drain(first, "test"))
    await asyncio.sleep(0)
    assert first.state == "draining" and pool.pick() is None  # out of rotation at once
    newcomer, cold, _ = await pool.acquire()  # a new request gets a new replica, not the draining one
    assert cold and newcomer is not first
    assert provider.stopped == [] and not drain.done()  # still waiting for the in-flight request
    pool.release(busy)
    await drain
    assert provider.stopped == [(first.id, 0)]  # stopped only once nothing was in flight
    assert first not in pool.replicas and pool.pick() is newcomer
    pool.release(newcomer)


async def test_removal_drains_then_refuses_new_requests(make_pool: Callable[..., FunctionPool],
                                                        provider: FakeProvider) -> None:
    pool = make_pool()
    await warm(pool)
    busy, _, _ = await pool.acquire()
    closing = asyncio.ensure_future(pool.close("removed", drain=True))
    await until(lambda: busy.state == "draining", what="the drain")
    with pytest.raises(NotFound):
        await pool.acquire()
    assert provider.stopped == []
    pool.release(busy)
    await closing
    assert provider.stopped == [(busy.id, 0)] and pool.replicas == []


# ---- scaling up, and its ceiling --------------------------------------------------------------------


async def test_requests_past_concurrency_add_a_replica_and_spread_over_it(
        make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    pool = make_pool(concurrency=2, max=4)
    first = await warm(pool)
    held = [(await pool.acquire())[0] for _ in range(2)]  # first is at its concurrency now
    assert held == [first, first] and len(provider.started) == 1
    third, cold, _ = await pool.acquire()  # served by first (ready), and a second replica is started
    assert third is first and not cold
    await until(lambda: sum(r.state == "ready" for r in pool.replicas) == 2, what="a second replica")
    fourth, _, _ = await pool.acquire()
    assert fourth is not first and fourth.inflight == 1  # the least loaded one takes the next request
    for replica in [*held, third, fourth]:
        pool.release(replica)
    assert len(provider.started) == 2


async def test_max_replicas_is_never_exceeded(make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    pool = make_pool(concurrency=1, max=2)
    await warm(pool)
    held = []
    for _ in range(8):  # every acquire past the concurrency asks for one more replica
        held.append((await pool.acquire())[0])
        await asyncio.sleep(0)  # a start it asked for has reached the provider now
        await until(lambda: pool.status()["availableReplicas"] == provider.start_calls, what="starts to settle")
        await settle()
    assert len(provider.started) == 2 and len(pool.replicas) == 2
    assert pool.scale_to(10) == 2  # the admin API is clamped to scale.max as well
    await asyncio.sleep(0)
    assert len(provider.started) == 2
    for replica in held:
        pool.release(replica)


async def test_scale_to_starts_and_drains(make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    pool = make_pool(max=3)
    assert pool.scale_to(3) == 3
    await until(lambda: pool.status()["availableReplicas"] == 3, what="3 ready replicas")
    await settle()
    assert pool.scale_to(1) == 1
    await until(lambda: len(provider.stopped) >= 2, what="2 replicas drained")
    await settle()
    assert len(provider.stopped) == 2
    assert pool.status()["availableReplicas"] == 1 and all(inflight == 0 for _, inflight in provider.stopped)


# ---- crashes ----------------------------------------------------------------------------------------


async def test_a_crashed_replica_is_forgotten_and_the_next_request_starts_another(
        make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    pool = make_pool()
    first = await warm(pool)
    await provider.crash(first)
    await until(lambda: first not in pool.replicas, what="the watcher to notice the crash")
    assert first.state == "dead" and pool.pick() is None
    second, cold, _ = await pool.acquire()
    assert cold and second is not first and len(provider.started) == 2
    pool.release(second)


async def test_a_refused_replica_is_discarded_and_replaced(make_pool: Callable[..., FunctionPool],
                                                           provider: FakeProvider) -> None:
    pool = make_pool()
    first = await warm(pool)
    pool.discard(first, "unreachable")  # what the gateway does on a refused connection
    assert first.state == "dead" and pool.pick() is None
    second, cold, _ = await pool.acquire()
    assert cold and second is not first
    await until(lambda: provider.stopped and provider.stopped[0][0] == first.id, what="the dead one stopped")
    pool.release(second)


async def test_a_suspect_replica_is_out_of_rotation_until_ready_again(make_pool: Callable[..., FunctionPool],
                                                                      provider: FakeProvider) -> None:
    pool = make_pool()
    first = await warm(pool)
    provider.fakes[first.id].loaded.clear()  # a replaced worker reloading its model answers 503 "loading"
    pool.suspect(first, "loading")
    assert first.state == "recovering" and pool.pick() is None
    waiter = asyncio.ensure_future(pool.acquire())
    await until(lambda: pool.queued == 1, what="the request to wait for the recovery")
    assert len(provider.started) == 1  # a recovery is waited for, not answered with a new replica
    provider.fakes[first.id].loaded.set()
    replica, _, _ = await waiter
    assert replica is first and first.state == "ready"
    pool.release(replica)


# ---- idle and minimum -------------------------------------------------------------------------------


async def test_idle_replicas_scale_to_zero_and_busy_ones_stay(make_pool: Callable[..., FunctionPool],
                                                              provider: FakeProvider) -> None:
    pool = make_pool(idle="30s")
    first = await warm(pool)
    pool.reap(first.last_used + 29)  # not idle long enough
    assert first.state == "ready"
    busy, _, _ = await pool.acquire()
    pool.reap(first.last_used + 3600)  # in flight: never reaped, however old its last use
    assert first.state == "ready"
    pool.release(busy)
    pool.reap(first.last_used + 31)
    assert first.state in ("draining", "stopping", "stopped")
    await until(lambda: provider.stopped == [(first.id, 0)], what="the idle replica to stop")
    assert pool.status()["replicas"] == 0 and provider.live(NAME) == []


async def test_scale_min_is_kept_warm_without_any_request(make_pool: Callable[..., FunctionPool],
                                                          provider: FakeProvider) -> None:
    pool = make_pool(min=1, idle="1s")
    pool.reap(0.0)
    await until(lambda: pool.status()["availableReplicas"] == 1, what="scale.min warm")
    only = pool.replicas[0]
    pool.reap(only.last_used + 3600)  # idle, but it is the minimum
    await asyncio.sleep(0)
    assert only.state == "ready" and len(provider.started) == 1


# ---- redeploy ---------------------------------------------------------------------------------------


async def test_redeploy_switches_generation_after_the_new_replica_is_ready(
        make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    pool = make_pool()
    old = await warm(pool)
    assert await pool.update(deployment(environment={"VERSION": "v1"}), 2) is True
    provider.auto_ready = False
    await until(lambda: len(provider.started) == 2, what="the generation-2 replica to start")
    new = provider.started[1]
    assert new.generation == 2 and provider.deployed == [(NAME, 2)]
    during, _, _ = await pool.acquire()  # the new one is loading: the old generation keeps serving
    assert during is old
    pool.release(during)
    provider.fakes[new.id].loaded.set()
    await until(lambda: provider.stopped == [(old.id, 0)], what="the old generation to drain and stop")
    after, cold, _ = await pool.acquire()
    assert after is new and not cold and pool.generation == 2
    pool.release(after)


async def test_an_unchanged_redeploy_keeps_the_replicas(make_pool: Callable[..., FunctionPool],
                                                        provider: FakeProvider) -> None:
    pool = make_pool()
    first = await warm(pool)
    assert await pool.update(deployment(), 2) is False
    assert pool.generation == 1 and len(provider.started) == 1 and provider.deployed == []
    replica, cold, _ = await pool.acquire()
    assert replica is first and not cold
    pool.release(replica)


async def test_a_redeploy_at_zero_starts_nothing(make_pool: Callable[..., FunctionPool],
                                                 provider: FakeProvider) -> None:
    pool = make_pool()
    assert await pool.update(deployment(environment={"VERSION": "v2"}), 2) is True
    await asyncio.sleep(0)
    assert provider.started == [] and pool.generation == 2
    replica, cold, _ = await pool.acquire()
    assert cold and replica.generation == 2
    pool.release(replica)


async def test_errors_are_the_hierarchy(make_pool: Callable[..., FunctionPool], provider: FakeProvider) -> None:
    """Whatever goes wrong in the pool reaches the gateway as a HydroError (a status, never a traceback)."""
    pool = make_pool()
    await pool.close("removed", drain=True)
    with pytest.raises(HydroError) as caught:
        await pool.acquire()
    assert caught.value.status == 404 and caught.value.function == NAME
