"""Processes of a run: free ports, start in their own session, wait for HTTP, always stop.

Every server is started with ``start_new_session`` so that stopping it signals its whole process
group (gunicorn workers, uvicorn children, replicas of a gateway) and nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One request; never raises on an error status (proxies ignored: everything is on 127.0.0.1)."""
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


@dataclass
class Server:
    """One started process (group) and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_seconds: float | None = None
    extra_pids: set[int] = field(default_factory=set)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL what is left after ``timeout``."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # children left in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self.extra_pids:  # e.g. replicas a gateway started in sessions of their own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.proc = None


def start(name: str, argv: list[str], log_dir: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Server:
    """Start ``argv`` in its own session with stdout+stderr in ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server(name, argv, log_dir / f"{name}.log")
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(server.log_path, "ab") as log:
        server.started_at = time.monotonic()
        server.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=full_env, cwd=cwd, start_new_session=True)
    return server


def wait_ready(server: Server, url: str, timeout: float = 60.0, expect: int = 200) -> float:
    """Poll ``url`` until it answers ``expect``; the seconds since launch. Raises with the log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited before it was ready:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            if http("GET", url, timeout=2)[0] == expect:
                server.ready_seconds = time.monotonic() - server.started_at
                return server.ready_seconds
        time.sleep(0.02)
    raise RuntimeError(f"{server.name} not ready at {url} after {timeout:.0f}s:\n{server.log_tail()}")


@contextlib.contextmanager
def running(name: str, argv: list[str], log_dir: Path, ready_url: str, *, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 60.0) -> Iterator[Server]:
    """A started, ready server that is stopped when the block ends, whatever happens in it."""
    server = start(name, argv, log_dir, env=env, cwd=cwd)
    try:
        wait_ready(server, ready_url, timeout)
        yield server
    finally:
        server.stop()
