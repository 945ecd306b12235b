"""Running handler code under the runtime's limits: in-flight cap (429) and execution timeout (504).

Custom functions and routers run in a thread pool so the request thread can stop waiting at the
deadline: they do I/O and can block for as long as a socket or a lock lets them. Python cannot
kill a thread, so a handler that overruns keeps its in-flight slot until it really returns: the
cap then bounds the threads a misbehaving handler can pile up, not just the requests being answered.

A model's ``predict`` runs inline in the request thread instead (:meth:`Executor.run_inline`).
It is CPU work on an in-memory model, which the pool could not stop either: the pool would only
answer 504 earlier while the same CPU stays busy. The handoff to a pool thread and back costs
~35 us per call (two thread wake-ups under the GIL, a Future and its condition variable), a few
percent of an iris-sized request, so the hot path skips it and enforces the deadline after the
call: an answer later than the timeout is still a 504, as it would be through the pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from hydro_serving.errors import DeadlineExceeded, TooManyRequests


class Executor:
    """Admits at most ``max_inflight`` executions and waits for each up to a timeout."""

    def __init__(self, function: str, max_inflight: int, on_change: Callable[[int], None] | None = None) -> None:
        self.function = function
        self.max_inflight = max_inflight
        self._on_change = on_change
        self._inflight = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def inflight(self) -> int:
        return self._inflight

    def _pool_lazy(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:  # created on first use: inside the worker process, after fork
                self._pool = ThreadPoolExecutor(max_workers=self.max_inflight, thread_name_prefix="hydro-handler")
            return self._pool

    def _acquire(self) -> None:
        with self._lock:
            if self._inflight >= self.max_inflight:
                raise TooManyRequests(
                    f"function '{self.function}' is already executing {self.max_inflight} requests "
                    f"(HYDRO_MAX_INFLIGHT); retry later", retry_after=1, function=self.function)
            self._inflight += 1
            count = self._inflight
        if self._on_change:
            self._on_change(count)

    def _release(self, _future: Future[Any] | None = None) -> None:
        with self._lock:
            self._inflight -= 1
            count = self._inflight
        if self._on_change:
            self._on_change(count)

    def run(self, call: Callable[[], Any], timeout: float) -> Any:
        """Run ``call`` in the pool; 429 when full, 504 after ``timeout`` seconds."""
        return self.submit_and_wait(lambda: self._pool_lazy().submit(call), timeout)

    def run_inline(self, call: Callable[[], Any], timeout: float) -> Any:
        """Run ``call`` in this thread under the same cap (429); a call that overran ``timeout`` is a 504."""
        self._acquire()
        started = time.monotonic()
        try:
            result = call()
        finally:
            self._release()
        if time.monotonic() - started > timeout:
            raise DeadlineExceeded(
                f"function '{self.function}' did not answer within {timeout:g}s (timeout)",
                function=self.function)
        return result

    def submit_and_wait(self, submit: Callable[[], Future[Any]], timeout: float) -> Any:
        """Like :meth:`run` for work queued elsewhere (the batcher): ``submit`` returns its future."""
        self._acquire()
        try:
            future = submit()
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded(
                f"function '{self.function}' did not answer within {timeout:g}s (timeout)",
                function=self.function) from None

    def shutdown(self) -> None:
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
