"""Helpers of the stream end-to-end tests: the worker as a real process, and a live reader of topics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class Worker:
    """``hydro stream`` as a real process, pointed at a gateway and its credentials."""

    def __init__(self, bootstrap: str, gateway: Any, log_path: Path, *extra: str) -> None:
        self.argv = [sys.executable, "-m", "hydro_serving.cli.main", "stream", "-b", bootstrap, "--gateway",
                     gateway.url, "--state", str(gateway.state_dir), "--refresh", "0.3s", *extra]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} x{count} in the worker's log:\n{self.log()[-3000:]}")


class Reader:
    """Reads topics from the beginning in a background thread (no group); ``records[topic]`` grows live."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: dict[str, list[Any]] = {t: [] for t in topics}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Reader:
        self._thread.start()
        assert self._ready.wait(30), "the reader did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)

    def count(self, topic: str) -> int:
        if self._error is not None:
            raise AssertionError(f"the reader failed: {self._error!r}")
        return len(self.records[topic])

    def request_ids(self, topic: str) -> set[bytes]:
        """The distinct ``x-request-id`` headers read so far on ``topic``."""
        return {v for record in list(self.records[topic]) for k, v in record.headers if k == "x-request-id"}

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: " + ", ".join(f"{t}={self.count(t)}" for t in self.topics))

    def _main(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:
            self._error = exc

    async def _read(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, recs in batches.items():
                    self.records[tp.topic].extend(recs)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
