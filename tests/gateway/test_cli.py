"""The ``hydro`` commands over a real gateway: deploy from stack.yml, list, describe, invoke, logs, remove, up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

STACK = """\
version: "1.0"
provider:
  name: hydro
  gateway: {url}
functions:
  echo:
    lang: python3
    handler: ./echo
    scale:
      idle: 300
"""


def hydro(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], input=stdin.decode() if stdin
                          else None, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
                          cwd=cwd, check=False)


@pytest.fixture
def stack_dir(tmp_path: Path, gateway: Any) -> Path:
    gateway.write_handler(tmp_path / "project" / "echo")
    (tmp_path / "project" / "stack.yml").write_text(STACK.format(url=gateway.url))
    return tmp_path / "project"


def test_deploy_list_describe_invoke_logs_remove(gateway: Any, stack_dir: Path) -> None:
    env = {"HYDRO_STATE": str(gateway.state_dir)}
    out = hydro("deploy", "-f", str(stack_dir / "stack.yml"), env=env)
    assert out.returncode == 0, out.stderr
    assert "created" in out.stdout and f"{gateway.url}/function/echo" in out.stdout
    assert gateway.status("echo")["hydro"]["handler"] == str(stack_dir / "echo")  # made absolute
    out = hydro("deploy", env=env, cwd=stack_dir)  # ./stack.yml by default
    assert out.returncode == 0 and "unchanged" in out.stdout, out.stderr

    out = hydro("list", "--gateway", gateway.url, env=env)
    assert out.returncode == 0 and "echo" in out.stdout and "python3" in out.stdout, out.stderr
    out = hydro("describe", "echo", "--gateway", gateway.url, env=env)
    assert out.returncode == 0 and json.loads(out.stdout)["name"] == "echo"

    out = hydro("invoke", "echo", "--data", '{"a": 1}', "--gateway", gateway.url)
    assert out.returncode == 0 and json.loads(out.stdout)["echo"] == {"a": 1}, out.stderr
    out = hydro("invoke", "echo", stdin=b'{"b": 2}', env={"HYDRO_GATEWAY": gateway.url})
    assert out.returncode == 0 and json.loads(out.stdout)["echo"] == {"b": 2}, out.stderr
    out = hydro("invoke", "nope", "--data", "{}", "--gateway", gateway.url)
    assert out.returncode == 1 and json.loads(out.stderr)["function"] == "nope"

    out = hydro("logs", "echo", "--tail", "50", "--gateway", gateway.url, env=env)
    assert out.returncode == 0 and "replica echo-" in out.stdout, out.stderr
    out = hydro("remove", "echo", "--gateway", gateway.url, env=env)
    assert out.returncode == 0 and "removed echo" in out.stdout
    out = hydro("describe", "echo", "--gateway", gateway.url, env=env)
    assert out.returncode == 1 and "not deployed" in out.stderr


def test_cli_without_the_right_credentials_says_so(gateway: Any, stack_dir: Path, tmp_path: Path) -> None:
    out = hydro("list", "--gateway", gateway.url, env={"HYDRO_STATE": str(tmp_path / "elsewhere")})
    assert out.returncode == 1 and "no credentials for the gateway" in out.stderr and "Traceback" not in out.stderr
    assert f"hydro login {gateway.url}" in out.stderr
    out = hydro("list", "--gateway", gateway.url, env={"HYDRO_TOKEN": "wrong"})
    assert out.returncode == 1 and "refused the credentials" in out.stderr
    out = hydro("list", "--gateway", "http://127.0.0.1:9", env={"HYDRO_TOKEN": "x"})
    assert out.returncode == 1 and "no gateway answers" in out.stderr


def test_deploy_reports_stack_and_gateway_errors(gateway: Any, stack_dir: Path) -> None:
    env = {"HYDRO_STATE": str(gateway.state_dir)}
    out = hydro("deploy", "-f", str(stack_dir / "missing.yml"), env=env)
    assert out.returncode == 1 and "no stack file" in out.stderr
    out = hydro("deploy", "-f", str(stack_dir / "stack.yml"), "--filter", "nope", env=env)
    assert out.returncode == 1 and "nope" in out.stderr
    (stack_dir / "bad.yml").write_text(STACK.format(url=gateway.url).replace("./echo", "./no-such-dir"))
    out = hydro("deploy", "-f", str(stack_dir / "bad.yml"), env=env)
    assert out.returncode == 1 and "functions.echo.handler" in out.stderr and "does not exist" in out.stderr


HEADERS_HANDLER = """
def handle(payload, context):
    return {"headers": {k.lower(): v for k, v in context.headers.items()}}
"""


def test_invoke_sends_the_token_for_auth_functions_and_repeatable_headers(gateway_factory: Any,
                                                                          tmp_path: Path) -> None:
    gw = gateway_factory("--auth-functions")
    gw.deploy(gw.python_spec("hdr", gw.write_handler(tmp_path / "hdr", HEADERS_HANDLER)))
    # no credential unless asked, even though the CLI holds the admin token of this gateway
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gw.url, "--state", str(gw.state_dir))
    assert out.returncode == 1 and json.loads(out.stderr)["code"] == "unauthorized", out.stderr
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gw.url, "-H", "X-One: 1", "-H", "X-Two:  two ",
                "--state", str(gw.state_dir), "--auth")
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)["headers"]
    assert seen["x-one"] == "1" and seen["x-two"] == "two"
    assert "authorization" not in seen  # the gateway consumed it
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gw.url, "--auth", env={"HYDRO_TOKEN": gw.token})
    assert out.returncode == 0, out.stderr
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gw.url, "--auth")  # the test's HYDRO_STATE: none
    assert out.returncode == 1 and "no credentials for the gateway" in out.stderr, out.stderr
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gw.url, "-H", "no colon")
    assert out.returncode == 2 and "Name: value" in out.stderr


def test_gateway_never_forwards_its_admin_token_to_a_function(gateway: Any, tmp_path: Path) -> None:
    gateway.deploy(gateway.python_spec("hdr", gateway.write_handler(tmp_path / "hdr", HEADERS_HANDLER)))
    env = {"HYDRO_STATE": str(gateway.state_dir)}
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gateway.url, "--auth", env=env)
    assert out.returncode == 0, out.stderr
    assert "authorization" not in json.loads(out.stdout)["headers"]
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gateway.url, "-H",
                f"Authorization: Bearer {gateway.token}")
    assert out.returncode == 0 and "authorization" not in json.loads(out.stdout)["headers"], out.stderr
    # an Authorization header meant for the function itself (not the admin token) still reaches it
    out = hydro("invoke", "hdr", "--data", "{}", "--gateway", gateway.url, "-H", "Authorization: Bearer fn", env=env)
    assert out.returncode == 0 and json.loads(out.stdout)["headers"]["authorization"] == "Bearer fn", out.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_up_starts_a_background_gateway_when_none_answers(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    project = tmp_path / "up"
    (project / "echo").mkdir(parents=True)
    (project / "echo" / "handler.py").write_text("def handle(payload, context):\n    return {'echo': payload}\n")
    (project / "stack.yml").write_text(STACK.format(url=url))
    state = tmp_path / "up-state"
    env = {"HYDRO_STATE": str(state)}
    try:
        out = hydro("up", "-f", str(project / "stack.yml"), env=env)
        assert out.returncode == 0, out.stderr
        assert "started a local gateway" in out.stdout and "created" in out.stdout
        out = hydro("invoke", "echo", "--data", '{"up": true}', env=env, cwd=project)
        assert out.returncode == 0 and json.loads(out.stdout)["echo"] == {"up": True}, out.stderr
        out = hydro("up", "-f", str(project / "stack.yml"), env=env)  # a second time: reuses it
        assert out.returncode == 0 and "started" not in out.stdout and "unchanged" in out.stdout, out.stderr
    finally:
        pid_file = state / "gateway.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def test_gateway_provider_choice_reaches_get_provider(gateway_factory: Any, tmp_path: Path) -> None:
    from hydro_serving.gateway.config import GatewayConfig
    from hydro_serving.gateway.providers import get_provider

    out = hydro("gateway", "--provider", "nope", "--state", str(tmp_path / "s"))
    assert out.returncode == 2 and "local" in out.stderr and "docker" in out.stderr
    config = GatewayConfig(state_dir=tmp_path / "s", docker_network="host")
    assert get_provider("local", config).name == "local"
    assert get_provider("docker", config).name == "docker"  # built without reaching an engine
    gw = gateway_factory("--provider", "docker", "--docker-network", "host")
    assert gw.admin("GET", "/system/info")[1]["provider"]["orchestration"] == "docker"
