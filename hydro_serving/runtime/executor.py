"""Running handler code under the runtime's limits: in-flight cap (429) and execution timeout (504).

Handlers run in a thread pool so the request thread can stop waiting at the deadline. Python
cannot kill a thread, so a handler that overruns keeps its in-flight slot until it really
returns: the cap then bounds the threads a misbehaving handler can pile up, not just the
requests being answered.
"""

from __future__ import annotations

import threading
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
