"""Fixtures for the Knative tests: the CRD file, and kmock's Kubernetes API emulator on 127.0.0.1.

No Kubernetes API server (let alone Knative's controller) can run on this machine. kmock's
``KubernetesEmulator`` is a real HTTP server that stores custom objects in memory and answers
the Kubernetes REST routes the kubernetes client uses (create, get, list, merge patch, delete),
validating nothing; it stands in for the API server. It runs in a thread with its own event loop
so that the synchronous kubernetes client can talk to it over real HTTP from the test.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("HYDRO_SHARED", REPO.parent / "shared"))
CRD_PATH = SHARED / "schemas" / "knative-serving-service-crd.yaml"
SERVICES = "serving.knative.dev/v1/services"


@pytest.fixture(scope="session")
def crd_path() -> Path:
    if not CRD_PATH.is_file():
        unavailable(f"the Knative Service CRD is not at {CRD_PATH} (set HYDRO_SHARED to the folder holding schemas/)")
    return CRD_PATH


@pytest.fixture(scope="session")
def validator(crd_path: Path) -> Any:
    from hydro_serving.builder.knative import KnativeValidator

    return KnativeValidator(crd_path)


def _emulator_class() -> type:
    """kmock's emulator plus the one API-server duty Knative waits depend on: ``metadata.generation``.

    A real API server sets generation 1 on create and increments it whenever a write changes the
    spec; ``hydro deploy`` compares it with ``status.observedGeneration`` so that a stale Ready from
    before an update does not count. kmock stores objects as given, so this subclass adds the counter.
    """
    import kmock

    class GenerationCountingEmulator(kmock.KubernetesEmulator):
        async def _handle(self, request: Any) -> Any:
            data = request.data
            if request.resource is not None and isinstance(data, dict) and request.subresource is None:
                if request.action == kmock.action.CREATE:
                    data.setdefault("metadata", {})["generation"] = 1
                elif request.action == kmock.action.UPDATE and "spec" in data:
                    key = (request.resource, request.namespace, request.name)
                    if key in self.objects and not self.objects[key].deleted:
                        live = self.objects[key].raw
                        if data["spec"] != live.get("spec"):
                            generation = (live.get("metadata", {}).get("generation") or 0) + 1
                            data.setdefault("metadata", {})["generation"] = generation
            return await super()._handle(request)

    return GenerationCountingEmulator


class Emulator:
    """kmock's KubernetesEmulator served on 127.0.0.1 from a background event loop."""

    def __init__(self, crd_installed: bool = True) -> None:
        self.crd_installed = crd_installed
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.handler: Any = None
        self.url = ""
        self._stop: asyncio.Event | None = None
        self._serving: Future[None] | None = None

    def start(self) -> None:
        self.thread.start()
        started: Future[None] = Future()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(started), self.loop)
        started.result(timeout=30)

    async def _serve(self, started: Future[None]) -> None:
        import kmock

        self._stop = asyncio.Event()
        try:
            async with _emulator_class()() as handler, kmock.Server(handler) as server:
                if self.crd_installed:  # what installing Knative's CRD does: the resource exists
                    handler.resources[SERVICES] = kmock.ResourceInfo(kind="Service", namespaced=True)
                else:  # kmock accepts any resource; a cluster without the CRD answers 404 on its routes
                    handler[kmock.resource(SERVICES)] << 404
                self.handler, self.url = handler, str(server.url).rstrip("/")
                started.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the emulator's loop (its object store is not thread-safe)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def object(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        """The stored object, as the API server would return it (None when absent or deleted)."""
        import kmock

        def get() -> dict[str, Any] | None:
            key = (kmock.resource(SERVICES), namespace, name)
            if key not in self.handler.objects or self.handler.objects[key].deleted:
                return None
            return dict(self.handler.objects[key].raw)

        return self.call(get)

    def set_status(self, name: str, status: dict[str, Any], namespace: str = "default") -> None:
        """Write a status as Knative's controller would (the emulator has no controller)."""
        import kmock

        self.call(lambda: self.handler.objects[kmock.resource(SERVICES), namespace, name].patch({"status": status}))

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._serving is not None:
            self._serving.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.retries = 0
        return client.ApiClient(configuration)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def bare_emulator() -> Iterator[Emulator]:
    """A Kubernetes API without Knative's CRD installed."""
    emu = Emulator(crd_installed=False)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
