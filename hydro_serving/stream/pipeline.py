"""One function's stream: consume its ``in`` topic, call it through the transport, produce answers.

Records are spread over ``concurrency`` lanes by key (crc32 of the key; keyless records round-robin
by offset). A lane handles its records one after another, so **the records of one key are called
and answered in order** while different keys run concurrently; across partitions too, since a key
always maps to the same lane. The answer is produced with the same key, so the producer's
partitioner puts every answer of a key in one output partition, in order (aiokafka keeps one request
in flight per partition).

A record is finished when its answer or error record is acknowledged by the broker (acks=all); only
then can its offset be committed (see :mod:`offsets`). A crash therefore loses nothing but may
answer a record twice: at-least-once, duplicates detectable by request id.

What happens to a record:

* malformed (value not JSON, too big, hostile headers): error record at once, the function is not called;
* the gateway is unreachable (connection refused): the lane waits and tries again, forever (the record
  is not at fault); a stop interrupts the wait and the record is left uncommitted for the next run;
* 429 or 503 (the function is saturated or still starting): retried ``retries`` times with exponential
  backoff and jitter, honouring ``Retry-After``; then an error record;
* any other 4xx/5xx, a timeout, a connection lost mid-call: error record (the function may have run:
  not retried, so a failing record costs one call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hydro_serving.errors import HydroError
from hydro_serving.stack import Streaming
from hydro_serving.stream import records
from hydro_serving.stream.config import StreamConfig
from hydro_serving.stream.offsets import OffsetBook
from hydro_serving.transport import Reply, Transport, TransportError

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 503)
_TRANSPORT_STATUS = {"timeout": 504, "connection_lost": 502}


@dataclass
class Counters:
    consumed: int = 0
    answered: int = 0
    failed: int = 0
    retried: int = 0
    commits: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class Stopping(Exception):
    """The pipeline is stopping while a record waits: leave it unfinished (it is read again later)."""


class Pipeline:
    """The consumer, lanes and committer of one function; ``start`` then ``stop``."""

    def __init__(self, function: str, streaming: Streaming, call_timeout: float, config: StreamConfig,
                 transport: Transport, producer: Any, consumer_factory: Callable[..., Any]) -> None:
        self.function = function
        self.streaming = streaming
        self.call_timeout = call_timeout
        self.config = config
        self.transport = transport
        self.producer = producer
        self._consumer_factory = consumer_factory
        self.counters = Counters()
        self.book = OffsetBook()
        self._stopping = asyncio.Event()
        self._lanes: list[asyncio.Queue[Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._executor = ThreadPoolExecutor(max_workers=streaming.concurrency,
                                            thread_name_prefix=f"stream-{function}")
        self.consumer: Any = None

    # ---- life ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.streaming
        self.consumer = self._consumer_factory(self)
        await self.consumer.start()
        self._lanes = [asyncio.Queue(maxsize=self.config.lane_queue) for _ in range(s.concurrency)]
        self._tasks = [asyncio.create_task(self._lane(q), name=f"{self.function}-lane-{i}")
                       for i, q in enumerate(self._lanes)]
        self._fetcher = asyncio.create_task(self._fetch(), name=f"{self.function}-fetch")
        self._committer = asyncio.create_task(self._commit_loop(), name=f"{self.function}-commit")
        log.warning("stream: consuming %s from topic %s (group %s, concurrency %d) -> %s, errors -> %s",
                    self.function, s.in_topic, s.group, s.concurrency, s.out_topic, s.errors_topic)

    async def stop(self) -> None:
        """Stop fetching and calling, commit what is finished, leave the group.

        Records fetched but not finished stay uncommitted: whoever consumes the topic next reads
        them again (at-least-once).
        """
        self._stopping.set()
        self._fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._fetcher
        for task in self._tasks:
            task.cancel()  # queued records stay uncommitted: the next consumer reads them again
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._committer
        await self.commit()
        await self.consumer.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        c = self.counters
        log.warning("stream: stopped consuming %s (consumed %d, answered %d, failed %d, retried %d)",
                    self.function, c.consumed, c.answered, c.failed, c.retried)

    # ---- fetching and committing ----------------------------------------------------------------------

    def lane_of(self, record: records.Inbound) -> int:
        n = len(self._lanes)
        if record.key is None:
            return record.offset % n
        return zlib.crc32(record.key) % n

    async def _fetch(self) -> None:
        while not self._stopping.is_set():
            try:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=500)
            except Exception as exc:  # the broker went away: aiokafka reconnects; keep asking
                log.warning("stream: fetching for %s failed (%s: %s)", self.function, type(exc).__name__, exc)
                await asyncio.sleep(1.0)
                continue
            for tp, recs in batches.items():
                for rec in recs:
                    inbound = records.Inbound(rec.topic, rec.partition, rec.offset, rec.key, rec.value,
                                              tuple(rec.headers or ()))
                    self.book.start(tp, rec.offset)
                    self.counters.consumed += 1
                    await self._lanes[self.lane_of(inbound)].put((tp, inbound))

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval)
            await self.commit()

    async def commit(self, tps: Any = None) -> None:
        offsets = self.book.to_commit(tps)
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # a rebalance in progress, a broker hiccup: the next tick tries again
            log.warning("stream: commit for %s failed (%s); will retry", self.function, exc)
            return
        self.book.committed(offsets)
        self.counters.commits += 1

    async def drain(self, tps: Any, timeout: float = 60.0) -> None:
        """Wait until the records of ``tps`` are finished, then commit them (before a partition is revoked)."""
        deadline = time.monotonic() + timeout
        while self.book.pending(tps) and time.monotonic() < deadline and not self._stopping.is_set():
            await asyncio.sleep(0.02)
        await self.commit(tps)
        self.book.forget(tps)

    # ---- one record -----------------------------------------------------------------------------------

    async def _lane(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            tp, record = await queue.get()
            try:
                out = await self.handle(record)
                await self._produce(out)
            except Stopping:
                return
            self.book.finish(tp, record.offset)

    async def handle(self, record: records.Inbound) -> records.Outbound:
        """The record's answer or error record (never raises but :class:`Stopping`)."""
        s = self.streaming
        try:
            call = records.prepare(record, self.config.max_record_bytes)
        except HydroError as exc:
            return self._failed(record, records.request_id_of(record), exc.status, exc.to_dict(), 0)
        try:
            reply, attempts = await self._call(call)
        except TransportError as exc:
            status = _TRANSPORT_STATUS.get(exc.kind, 502)
            error = {"error": f"calling {self.function}: {exc.message}", "code": exc.kind, "function": self.function}
            return self._failed(record, call.request_id, status, error, exc.attempts)
        if not reply.ok:
            return self._failed(record, call.request_id, reply.status, records.reply_error(self.function, reply),
                                attempts)
        self.counters.answered += 1
        return records.answer(record, call, reply, s.out_topic)

    def _failed(self, record: records.Inbound, request_id: str, status: int, error: dict[str, Any],
                attempts: int) -> records.Outbound:
        self.counters.failed += 1
        self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
        return records.failure(record, self.function, request_id, status, error, attempts,
                               self.streaming.errors_topic, self.config.keep_bytes)

    async def _call(self, call: records.Call) -> tuple[Reply, int]:
        loop = asyncio.get_running_loop()
        attempts = 0
        busy_retries = 0
        unreachable = 0
        while True:
            if self._stopping.is_set():
                raise Stopping
            attempts += 1
            try:
                reply = await loop.run_in_executor(self._executor, self.transport.invoke, self.function, call.body,
                                                   call.headers, self.call_timeout)
            except TransportError as exc:
                if not exc.retryable:
                    exc.attempts = attempts
                    raise
                unreachable += 1
                delay = self._backoff(unreachable)
                log.warning("stream: %s unreachable (%s); retrying in %.1fs", self.function, exc.message, delay)
                await self._sleep(delay)
                continue
            if reply.status in RETRY_STATUSES and busy_retries < self.config.retries:
                busy_retries += 1
                self.counters.retried += 1
                delay = reply.retry_after(self.config.retry_after_max) or self._backoff(busy_retries)
                await self._sleep(delay)
                continue
            return reply, attempts

    def _backoff(self, n: int) -> float:
        base = min(self.config.backoff * 2 ** (n - 1), self.config.backoff_max)
        return base * (0.5 + random.random() / 2)  # jitter: retries of many records do not march together

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        if self._stopping.is_set():
            raise Stopping

    async def _produce(self, out: records.Outbound) -> None:
        """Produce and wait for the broker's acknowledgement; retried until acknowledged or stopping.

        An answer too large for the broker becomes an error record (the function's answer cannot be
        delivered, which is this record's failure, not the broker's).
        """
        delay = 0.0
        while True:
            try:
                future = await self.producer.send(out.topic, out.value, key=out.key, headers=out.headers)
                await future
                return
            except Exception as exc:
                name = type(exc).__name__
                if name == "MessageSizeTooLargeError" and out.topic != self.streaming.errors_topic:
                    error = {"error": f"the answer ({len(out.value)} bytes) is larger than the broker accepts",
                             "code": "answer_too_large", "function": self.function}
                    rid = dict(out.headers).get(records.REQUEST_ID, b"").decode()
                    self.counters.answered -= 1
                    out = self._failed_answer(out, rid, error)
                    continue
                delay = min(max(delay * 2, 0.1), 5.0)
                log.warning("stream: producing to %s failed (%s: %s); retrying in %.1fs", out.topic, name, exc, delay)
                await self._sleep(delay)

    def _failed_answer(self, out: records.Outbound, request_id: str, error: dict[str, Any]) -> records.Outbound:
        self.counters.failed += 1
        envelope = records.Inbound(self.streaming.out_topic, -1, -1, out.key, out.value[: self.config.keep_bytes])
        return records.failure(envelope, self.function, request_id, 500, error, 1, self.streaming.errors_topic,
                               self.config.keep_bytes)
