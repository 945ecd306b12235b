"""Adaptive batching: requests that arrive together share one framework call.

A model's ``predict`` costs roughly the same for one row as for thirty, so under load the
runtime queues payloads for up to ``max_batch_delay_ms`` (or until ``max_batch_size`` are
waiting) and hands them to the handler's ``predict_batch`` at once. Each caller still gets
its own result or its own error; a request whose caller gave up (timeout) is dropped before
it is computed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from hydro_serving.errors import InternalError

log = logging.getLogger("hydro.runtime")

_STOP = object()


class Batcher:
    """One thread that collects payloads into batches and runs ``predict_batch`` on each."""

    def __init__(self, predict_batch: Callable[[list[Any]], list[Any]], max_batch_size: int,
                 max_batch_delay_ms: float, on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.max_delay = max(0.0, max_batch_delay_ms) / 1000.0
        self._on_batch = on_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, payload: Any) -> Future[Any]:
        """Queue one payload; the future resolves to its result (or raises its error)."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise InternalError("the batcher is stopped")
            if self._thread is None:  # started lazily: inside the worker process, after fork
                self._thread = threading.Thread(target=self._loop, name="hydro-batcher", daemon=True)
                self._thread.start()
            self._queue.put((payload, future))
        return future

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _collect(self, first: Any) -> tuple[list[tuple[Any, Future[Any]]], bool]:
        batch = [first]
        stop = False
        deadline = time.monotonic() + self.max_delay
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            live = [(p, f) for p, f in batch if f.set_running_or_notify_cancel()]
            if live:
                self._run(live)
            if stop:
                return

    def _run(self, batch: list[tuple[Any, Future[Any]]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = self._predict_batch([payload for payload, _ in batch])
            if len(results) != len(batch):
                raise InternalError(f"predict_batch returned {len(results)} results for {len(batch)} requests")
        except BaseException as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
