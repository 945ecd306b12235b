"""The CLI sends a credential only to the gateway it belongs to: real ``hydro`` processes, a real gateway,
and a foreign "gateway" (a plain HTTP server of the test) that records every request it receives.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


def hydro(*args: str, stdin: bytes | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``hydro ...`` as a real process (stdin closed unless given, so nothing waits for a prompt)."""
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args],
                          input=stdin.decode() if stdin is not None else "", capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)

STACK = """\
version: "1.0"
provider:
  name: hydro
  gateway: {url}
functions:
  echo:
    lang: python3
    handler: ./echo
"""


class Recorder:
    """A foreign HTTP server that answers 200 ``[]`` to anything and keeps every request (line, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append(f"{self.command} {self.path}\n{self.headers}\n{body.decode(errors='replace')}")
                data = b"[]"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def everything(self) -> str:
        return "\n".join(self.requests)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A private HYDRO_HOME, so logins of the test never touch (or read) the user's config."""
    return tmp_path / "home"


def test_a_stack_file_naming_another_gateway_gets_an_error_not_the_token(gateway: Any, recorder: Recorder,
                                                                         tmp_path: Path, home: Path) -> None:
    project = tmp_path / "project"
    gateway.write_handler(project / "echo")
    (project / "stack.yml").write_text(STACK.format(url=recorder.url))
    token = gateway.token
    # the CLI holds the real gateway's token three ways: its state, HYDRO_TOKEN, and a login
    out = hydro("login", gateway.url, "--token-stdin", stdin=token.encode(), env={"HYDRO_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    env = {"HYDRO_STATE": str(gateway.state_dir), "HYDRO_TOKEN": token, "HYDRO_GATEWAY": gateway.url,
           "HYDRO_HOME": str(home)}
    stack = str(project / "stack.yml")
    for argv in (["deploy", "-f", stack], ["up", "-f", stack, "--no-build"], ["list", "-f", stack],
                 ["describe", "echo", "-f", stack], ["remove", "echo", "-f", stack], ["logs", "echo", "-f", stack],
                 ["key", "list", "-f", stack], ["key", "create", "k", "--functions", "echo", "-f", stack],
                 ["invoke", "echo", "--data", "{}", "--auth", "-f", stack]):
        out = hydro(*argv, env=env)
        assert out.returncode == 1, (argv, out.stdout, out.stderr)
        assert "no credentials for the gateway" in out.stderr and recorder.url in out.stderr, (argv, out.stderr)
        assert "provider.gateway" in out.stderr and f"hydro login {recorder.url}" in out.stderr
        assert "Traceback" not in out.stderr
    # a plain invoke is anonymous: it reaches the foreign server, without any credential
    out = hydro("invoke", "echo", "--data", "{}", "-f", stack, env=env)
    assert out.returncode == 0, out.stderr
    seen = recorder.everything()
    # only anonymous requests: 'hydro up' asks /healthz whether a gateway answers, 'hydro invoke' the function
    assert any(r.startswith("POST /function/echo") for r in recorder.requests), seen
    assert all(r.startswith(("POST /function/echo", "GET /healthz")) for r in recorder.requests), seen
    assert token not in seen and "authorization" not in seen.lower()
    password = json.loads((gateway.state_dir / "credentials.json").read_text())["password"]
    assert password not in seen
    # the same commands with --gateway (the user's own choice) reach the real gateway with its token
    out = hydro("list", "-f", stack, "--gateway", gateway.url, env=env)
    assert out.returncode == 0, out.stderr


def test_credentials_belong_to_the_gateway_that_recorded_them(gateway: Any, recorder: Recorder, home: Path) -> None:
    assert json.loads((gateway.state_dir / "credentials.json").read_text())["url"] == gateway.url
    env = {"HYDRO_STATE": str(gateway.state_dir), "HYDRO_HOME": str(home)}
    out = hydro("list", "--gateway", gateway.url, env=env)
    assert out.returncode == 0, out.stderr
    # the state's token is not sent to another URL, even one named with --gateway
    out = hydro("list", "--gateway", recorder.url, env=env)
    assert out.returncode == 1 and "no credentials for the gateway" in out.stderr, out.stderr
    assert f"belong to {gateway.url}" in out.stderr
    # HYDRO_TOKEN belongs to HYDRO_GATEWAY when that is set, and goes nowhere else
    out = hydro("list", "--gateway", recorder.url, env={**env, "HYDRO_TOKEN": gateway.token,
                                                         "HYDRO_GATEWAY": gateway.url})
    assert out.returncode == 1 and "no credentials" in out.stderr, out.stderr
    assert recorder.requests == []


def test_login_logout(gateway: Any, tmp_path: Path, home: Path) -> None:
    env = {"HYDRO_HOME": str(home), "HYDRO_STATE": str(tmp_path / "no-state")}
    out = hydro("list", "--gateway", gateway.url, env=env)
    assert out.returncode == 1 and "no credentials" in out.stderr
    out = hydro("login", gateway.url, "--token-stdin", stdin=b"wrong-token\n", env=env)
    assert out.returncode == 1 and "refused the credentials" in out.stderr, out.stderr
    assert not (home / "config" / "logins.json").exists()
    out = hydro("login", gateway.url + "/", "--token-stdin", stdin=gateway.token.encode() + b"\n", env=env)
    assert out.returncode == 0 and "logged in" in out.stdout, out.stderr
    logins = home / "config" / "logins.json"
    assert stat.S_IMODE(os.stat(logins).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(logins.parent).st_mode) == 0o700
    out = hydro("list", "--gateway", gateway.url, env=env)
    assert out.returncode == 0, out.stderr
    out = hydro("logout", gateway.url, env=env)
    assert out.returncode == 0 and "logged out" in out.stdout
    assert gateway.token not in logins.read_text()
    out = hydro("list", "--gateway", gateway.url, env=env)
    assert out.returncode == 1 and "no credentials" in out.stderr
    out = hydro("login", "ftp://example.com", "--token-stdin", stdin=b"x\n", env=env)
    assert out.returncode == 2 and "http://" in out.stderr


def test_key_commands_and_invoke_with_a_key(gateway_factory: Any, tmp_path: Path) -> None:
    gw = gateway_factory("--auth-functions")
    gw.deploy(gw.python_spec("echo", gw.write_handler(tmp_path / "echo")))
    env = {"HYDRO_STATE": str(gw.state_dir), "HYDRO_HOME": str(tmp_path / "home")}
    out = hydro("key", "create", "ci", "--functions", "echo, other", "--expires", "30d", "--gateway", gw.url,
                env=env)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("hk_") and "\n" not in key and "shown only now" in out.stderr
    out = hydro("key", "list", "--gateway", gw.url, env=env)
    assert out.returncode == 0 and "ci" in out.stdout and "echo,other" in out.stdout and key not in out.stdout
    out = hydro("invoke", "echo", "--data", '{"k": 1}', "--gateway", gw.url, "--key", key)
    assert out.returncode == 0 and json.loads(out.stdout)["echo"] == {"k": 1}, out.stderr
    out = hydro("invoke", "echo", "--data", "{}", "--gateway", gw.url, "--key", key, "--auth", env=env)
    assert out.returncode == 2 and "not both" in out.stderr
    out = hydro("key", "create", "ci", "--functions", "echo", "--gateway", gw.url, env=env)
    assert out.returncode == 1 and "exists" in out.stderr
    out = hydro("key", "create", "bad", "--functions", "Echo!", "--gateway", gw.url, env=env)
    assert out.returncode == 1 and "functions[0]" in out.stderr
    out = hydro("key", "revoke", "ci", "--gateway", gw.url, env=env)
    assert out.returncode == 0 and "revoked" in out.stdout
    out = hydro("invoke", "echo", "--data", "{}", "--gateway", gw.url, "--key", key)
    assert out.returncode == 1 and "revoked" in json.loads(out.stderr)["error"]
    out = hydro("key", "list", "--json", "--gateway", gw.url, env=env)
    assert json.loads(out.stdout)[0]["status"] == "revoked"
