"""The ``hydro stream`` process: keeps one :class:`Pipeline` per streaming function, beside the gateway.

Every ``refresh`` seconds it asks its source which functions stream and reconciles: new function ->
start its pipeline; removed -> stop it (commit what is finished, leave the group); ``streaming``
changed -> restart it. Functions are called through the transport (HTTP to the gateway), so a
function at zero replicas is started by the gateway exactly as for HTTP traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from hydro_serving.stack import FunctionSpec
from hydro_serving.stream.config import StreamConfig
from hydro_serving.stream.pipeline import Pipeline
from hydro_serving.transport import Transport

log = logging.getLogger(__name__)


class Source(Protocol):
    def streaming_functions(self) -> dict[str, FunctionSpec] | None: ...


class StreamWorker:
    def __init__(self, config: StreamConfig, source: Source, transport: Transport, producer: Any,
                 consumer_factory: Any) -> None:
        self.config = config
        self.source = source
        self.transport = transport
        self.producer = producer
        self.consumer_factory = consumer_factory
        self.pipelines: dict[str, Pipeline] = {}
        self._specs: dict[str, FunctionSpec] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await self.producer.start()
        log.warning("stream: worker up (bootstrap %s, functions via %s)", self.config.bootstrap_servers,
                    self.config.gateway_url)
        try:
            while not stop.is_set():
                await self.reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.config.refresh)
        finally:
            for name in list(self.pipelines):
                await self._stop(name)
            await self.producer.stop()
            self.transport.close()
            log.warning("stream: worker stopped")

    async def reconcile(self) -> None:
        loop = asyncio.get_running_loop()
        wanted = await loop.run_in_executor(None, self.source.streaming_functions)
        if wanted is None:
            return
        for name in list(self.pipelines):
            spec, running = wanted.get(name), self._specs[name]
            if spec is None or (spec.streaming, spec.timeout) != (running.streaming, running.timeout):
                await self._stop(name)
        for name, spec in wanted.items():
            if name not in self.pipelines:
                await self._start(spec)

    async def _start(self, spec: FunctionSpec) -> None:
        assert spec.streaming is not None
        pipeline = Pipeline(spec.name, spec.streaming, spec.timeout + self.config.call_margin, self.config,
                            self.transport, self.producer, self.consumer_factory)
        try:
            await pipeline.start()
        except Exception as exc:  # a broker hiccup: the next refresh tries again
            log.warning("stream: cannot start consuming for %s: %s", spec.name, exc)
            with contextlib.suppress(Exception):
                await pipeline.consumer.stop()
            return
        self.pipelines[spec.name] = pipeline
        self._specs[spec.name] = spec

    async def _stop(self, name: str) -> None:
        pipeline = self.pipelines.pop(name)
        self._specs.pop(name, None)
        await pipeline.stop()
