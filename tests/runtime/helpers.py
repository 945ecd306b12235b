"""Helpers for the runtime tests: start real runtime processes on 127.0.0.1 and talk HTTP to them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: bytes | None = None, *, json_body: Any = None,
            content_type: str | None = "application/json", headers: dict[str, str] | None = None,
            timeout: float = 30) -> Reply:
    """One HTTP request with exact control over the body and Content-Type (urllib adds its own)."""
    if json_body is not None:
        body = json.dumps(json_body).encode()
    sent = dict(headers or {})
    if content_type is not None and body is not None:
        sent["Content-Type"] = content_type
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def post(port: int, path: str = "/", payload: Any = None, **kw: Any) -> Reply:
    return request(port, "POST", path, json_body=payload, **kw)


def get(port: int, path: str) -> Reply:
    return request(port, "GET", path)


@dataclass
class Proc:
    """A runtime (or `hydro run`) process in its own session, killed with its workers at the end."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, limit: float = 90) -> None:
        """Until /_/health answers (the server is listening), bounded; fails with the log."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if get(self.port, "/_/health").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"runtime did not start listening in {limit}s:\n{self.output()}")

    def wait_ready(self, limit: float = 120) -> list[int]:
        """Poll /_/ready until 200 (bounded); returns every status seen, in order."""
        seen: list[int] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status = get(self.port, "/_/ready").status
            except OSError:
                time.sleep(0.05)
                continue
            seen.append(status)
            if status == 200:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"runtime not ready in {limit}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def base_env(home: Path, extra: dict[str, str] | None = None, pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRO_")}
    env.update({"HYDRO_HOME": str(home), "HYDRO_STORE": f"file://{home / 'store'}",
                "HYDRO_CACHE": str(home / "cache"), "HYDRO_STATE": str(home / "state")})
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def start(argv: list[str], port: int, log: Path, env: dict[str, str], cwd: Path | None = None) -> Proc:
    handle = log.open("wb")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, *argv], stdout=handle, stderr=subprocess.STDOUT, env=env,
                            cwd=cwd, start_new_session=True)
    handle.close()
    return Proc(proc, port, log, started)


def start_runtime(spec: dict[str, Any], port: int, workdir: Path, env: dict[str, str]) -> Proc:
    """``python -m hydro_serving.runtime --spec SPEC.json --port N`` (what a provider runs)."""
    spec_path = workdir / f"{spec['name']}.json"
    spec_path.write_text(json.dumps(spec))
    return start(["-m", "hydro_serving.runtime", "--spec", str(spec_path), "--port", str(port)], port,
                 workdir / f"{spec['name']}.log", env)


def start_hydro_run(name: str, stack: Path, port: int, env: dict[str, str]) -> Proc:
    """``hydro run NAME -f stack.yml --port N`` (what a developer runs)."""
    return start(["-m", "hydro_serving", "run", name, "-f", str(stack), "--port", str(port)], port,
                 stack.parent / f"{name}.log", env, cwd=stack.parent)


def wait_for(predicate: Any, limit: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Counting:
    """The Flask app behind a fast path (runtime/fastpath.py), counting the requests that reach it."""

    def __init__(self, wsgi: Any) -> None:
        self.wsgi = wsgi
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.calls += 1
        return self.wsgi(environ, start_response)
