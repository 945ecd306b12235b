"""A fake provider for the in-process gateway tests and the FunctionPool unit tests.

It stands in for process spawning (the local provider's sandboxed processes, Docker's
containers) so that these layers run in milliseconds; the end-to-end tests in this folder keep
exercising the real providers. What is fake is only *how* a replica comes to exist: each replica
is a real aiohttp server on 127.0.0.1 (an ephemeral port), started in the test's own event loop,
that speaks the part of the runtime's contract the gateway relies on:

* ``GET /_/health`` answers 200 while the replica "runs";
* ``GET /_/ready[?wait=S]`` answers 200 once :attr:`FakeReplica.loaded` is set, else (after
  waiting up to ``S`` seconds, as the runtime does) the runtime's 503
  ``{"code": "unavailable", "function": ..., "details": {"status": "loading"}}``;
* any other request is the function: it answers JSON naming the replica, its generation, the
  path, the query, the method, the body and the headers it got. A JSON body
  ``{"hold": "<key>"}`` makes it wait until the test calls :meth:`FakeProvider.release` with that
  key, so "a request is in flight" is a state the test controls instead of a sleep.

A "crash" (:meth:`FakeProvider.crash`) closes the replica's listening socket and its connections
and completes :meth:`FakeProvider.wait_exit` with status 1, which is what the scaler's watcher
sees when a real replica's process dies.

The provider records what the scaler asked of it (``deployed``, ``started``, ``stopped``,
``removed``) and, for each stop, how many requests the replica still had in flight, so a test
can prove that draining happened before stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from hydro_serving.gateway.providers.base import Provider, Replica, next_replica_id
from hydro_serving.stack import FunctionSpec

READY_WAIT_MAX = 10.0


@dataclass(eq=False)
class FakeReplica:
    """The server behind one fake replica and the switches a test turns."""

    replica: Replica
    provider: FakeProvider
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    runner: web.AppRunner | None = None
    served: int = 0

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/_/health", self._health)
        app.router.add_get("/_/ready", self._ready)
        app.router.add_route("*", "/{path:.*}", self._invoke)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def exit(self, code: int) -> None:
        """The process is gone: no more connections, and the watcher learns the exit status."""
        if self.exited.is_set():
            return
        self.exit_code = code
        self.exited.set()
        if self.runner is not None:
            await self.runner.cleanup()

    # ---- the replica's HTTP side --------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "function": self.replica.function,
                                  "state": "ready" if self.loaded.is_set() else "loading"})

    async def _ready(self, request: web.Request) -> web.Response:
        try:
            wait = min(float(request.query.get("wait") or 0), self.provider.ready_wait_max)
        except ValueError:
            wait = 0.0
        if wait > 0 and not self.loaded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.loaded.wait(), wait)
        if self.loaded.is_set():
            return web.json_response({"status": "ready", "function": self.replica.function})
        return self.provider.loading_response(self.replica.function)

    async def _invoke(self, request: web.Request) -> web.Response:
        if not self.loaded.is_set():  # the runtime's gate: a request before the model is loaded
            return self.provider.loading_response(self.replica.function)
        body = await request.read()
        try:
            payload: Any = json.loads(body) if body else None
        except ValueError:
            payload = body.decode("utf-8", errors="replace")
        if isinstance(payload, dict) and isinstance(payload.get("hold"), str):
            await self.provider.hold(payload["hold"], self.replica)
        self.served += 1
        return web.json_response({
            "replica": self.replica.id, "generation": self.replica.generation, "method": request.method,
            "path": request.path, "query": dict(request.query), "payload": payload,
            "headers": dict(request.headers),
        })


class FakeProvider(Provider):
    """Replicas as in-process aiohttp servers (see the module docstring); records every call.

    ``auto_ready``: new replicas are ready at once (False: they answer "loading" until the test
    sets ``provider.replicas[i].loaded`` or calls :meth:`load_all`). ``fail_starts``: the next N
    starts spawn a replica that exits at once with status 3, like a model that cannot load.
    """

    name = "fake"

    def __init__(self, *, auto_ready: bool = True) -> None:
        self.auto_ready = auto_ready
        self.ready_wait_max = READY_WAIT_MAX  # how long /_/ready?wait= may hold a probe (the runtime's cap)
        self.fail_starts = 0
        self.deployed: list[tuple[str, int]] = []
        self.removed: list[str] = []
        self.start_calls = 0  # counted on entry, before the replica exists
        self.started: list[Replica] = []
        self.stopped: list[tuple[str, int]] = []  # (replica id, in-flight requests when the stop began)
        self.fakes: dict[str, FakeReplica] = {}
        self.log_lines: dict[str, list[str]] = {}
        self._holds: dict[str, asyncio.Event] = {}
        self._held: dict[str, asyncio.Event] = {}  # key -> set once a request is waiting on it
        self.closed = False

    # ---- what tests read and turn -------------------------------------------------------------------

    @property
    def replicas(self) -> list[FakeReplica]:
        return [self.fakes[r.id] for r in self.started]

    def live(self, function: str | None = None) -> list[FakeReplica]:
        return [f for f in self.replicas if f.alive and (function is None or f.replica.function == function)]

    def load_all(self) -> None:
        for fake in self.fakes.values():
            fake.loaded.set()

    def release(self, key: str) -> None:
        self._holds.setdefault(key, asyncio.Event()).set()

    async def held(self, key: str, timeout: float = 10.0) -> None:
        """Until a request holding on ``key`` has reached its replica's handler."""
        await asyncio.wait_for(self._held.setdefault(key, asyncio.Event()).wait(), timeout)

    async def hold(self, key: str, replica: Replica) -> None:
        self._held.setdefault(key, asyncio.Event()).set()
        await asyncio.wait_for(self._holds.setdefault(key, asyncio.Event()).wait(), 30)

    async def crash(self, replica: Replica, code: int = 1) -> None:
        await self.fakes[replica.id].exit(code)

    @staticmethod
    def loading_response(function: str) -> web.Response:
        return web.json_response({"error": f"function '{function}' is loading", "code": "unavailable",
                                  "function": function, "details": {"status": "loading"}},
                                 status=503, headers={"Retry-After": "1"})

    # ---- the Provider interface ---------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec, generation: int) -> None:
        self.deployed.append((spec.name, generation))

    async def remove(self, name: str) -> None:
        self.removed.append(name)

    async def start_replica(self, spec: FunctionSpec, generation: int) -> Replica:
        self.start_calls += 1
        replica = Replica(id=next_replica_id(spec.name), function=spec.name, endpoint="", generation=generation,
                          started_at=time.monotonic())
        fake = FakeReplica(replica, self)
        replica.endpoint = await fake.start()
        self.fakes[replica.id] = fake
        self.started.append(replica)
        self.log_lines.setdefault(spec.name, []).append(f"replica {replica.id} started (generation {generation})")
        if self.fail_starts > 0:
            self.fail_starts -= 1
            self.log_lines[spec.name].append("ModelLoadError: the model file is corrupt")
            await fake.exit(3)
        elif self.auto_ready:
            fake.loaded.set()
        return replica

    async def stop_replica(self, replica: Replica, grace: float) -> None:
        fake = self.fakes[replica.id]
        self.stopped.append((replica.id, replica.inflight))
        await fake.exit(0)

    def is_alive(self, replica: Replica) -> bool:
        fake = self.fakes.get(replica.id)
        return fake is not None and fake.alive

    async def wait_exit(self, replica: Replica) -> int | None:
        fake = self.fakes[replica.id]
        await fake.exited.wait()
        return fake.exit_code

    def exit_cause(self, replica: Replica) -> str:
        lines = self.log_lines.get(replica.function) or ["the replica exited"]
        return lines[-1]

    async def logs(self, name: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[str]:
        lines = list(self.log_lines.get(name, []))
        for line in lines[-tail:] if tail else lines:
            yield line

    async def close(self) -> None:
        self.closed = True
        for fake in list(self.fakes.values()):
            await fake.exit(0)


def admin_headers(state_dir: Path) -> dict[str, str]:
    """The admin bearer token from the gateway's state directory, read as the CLI reads it."""
    from hydro_serving.gateway.auth import read_credentials

    return {"Authorization": f"Bearer {read_credentials(state_dir).token}"}


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Yield to the event loop until ``predicate()`` holds; fail (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)
