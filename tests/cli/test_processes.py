"""Issue 14 points 15 and 17 with real processes: ``hydro up``/``hydro down``, ``hydro invoke -d @file``,
``hydro run``'s workers, and the gateway's log streams, stop and invocation counts.

Every gateway here is a real ``hydro gateway`` process (tests/gateway_fixtures.py or ``hydro up``)
with real python3 replicas; the CLI runs as ``python -m hydro_serving.cli.main``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_fixtures import free_port, http, pid_alive, python_spec

pytestmark = pytest.mark.process

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


def hydro(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
          stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=cwd, check=False,
                          input=stdin.decode() if stdin is not None else None)


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return not pid_alive(pid)


# ---- 15: hydro down -------------------------------------------------------------------------------------


def test_down_stops_the_gateway_up_started_and_removes_the_pid_file(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    project = tmp_path / "project"
    (project / "echo").mkdir(parents=True)
    (project / "echo" / "handler.py").write_text("def handle(payload, context):\n    return {'echo': payload}\n")
    (project / "stack.yml").write_text(STACK.format(url=url))
    state = tmp_path / "state"
    env = {"HYDRO_STATE": str(state)}
    pid_file = state / "gateway.pid"
    pid = 0
    try:
        out = hydro("up", "-f", str(project / "stack.yml"), env=env)
        assert out.returncode == 0 and "stop it with: hydro down" in out.stdout, out.stderr
        pid = int(pid_file.read_text())
        out = hydro("invoke", "echo", "-d", '{"up": 1}', env=env, cwd=project)
        assert out.returncode == 0, out.stderr
        token = json.loads((state / "credentials.json").read_text())["token"]
        functions = json.loads(http("GET", f"{url}/system/functions", headers={"Authorization": f"Bearer {token}"})[2])
        replica_pids = [i["pid"] for f in functions for i in f["status"]["instances"] if i.get("pid")]
        assert replica_pids

        out = hydro("down", env=env)
        assert out.returncode == 0 and f"gateway (pid {pid}) stopped" in out.stdout, out.stdout + out.stderr
        assert _wait_gone(pid) and not pid_file.exists()
        assert all(_wait_gone(p, 10) for p in replica_pids)  # its replicas went with it
        log = (state / "gateway.log").read_text()
        assert "stopped in" in log and " ERROR " not in log

        out = hydro("down", env=env)  # nothing left to stop
        assert out.returncode == 0 and "no gateway started by 'hydro up'" in out.stdout
    finally:
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_down_with_a_stale_pid_file_signals_nothing(tmp_path: Path) -> None:
    """A dead pid, and a live process that is not a gateway (a recycled pid): neither is signalled."""
    state = tmp_path / "state"
    state.mkdir()
    pid_file = state / "gateway.pid"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file.write_text(str(dead.pid))
    out = hydro("down", "--state", str(state))
    assert out.returncode == 0 and "stale pid file" in out.stdout and not pid_file.exists(), out.stderr

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(str(bystander.pid))
        out = hydro("down", "--state", str(state))
        assert out.returncode == 0 and "stale pid file" in out.stdout and not pid_file.exists(), out.stderr
        assert bystander.poll() is None  # not killed
    finally:
        bystander.kill()
        bystander.wait()
    pid_file.write_text("not a pid\n")
    out = hydro("down", "--state", str(state))
    assert out.returncode == 0 and "did not hold a process id" in out.stdout and not pid_file.exists()


def test_a_gateway_stopped_otherwise_removes_its_own_pid_file(gateway: Any) -> None:
    pid_file = gateway.state_dir / "gateway.pid"
    assert gateway.proc is not None
    pid_file.write_text(str(gateway.proc.pid))  # as 'hydro up' writes it
    gateway.stop()
    assert not pid_file.exists()


# ---- 15: hydro invoke -d @file against a gateway --------------------------------------------------------


def test_invoke_sends_the_file_named_by_at(gateway: Any, echo_dir: Path, tmp_path: Path) -> None:
    gateway.deploy(python_spec("echo", echo_dir))
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "a file"}')
    out = hydro("invoke", "echo", "-d", f"@{payload}", "--gateway", gateway.url)
    assert out.returncode == 0 and json.loads(out.stdout)["echo"] == {"from": "a file"}, out.stderr
    out = hydro("invoke", "echo", "-d", "@-", "--gateway", gateway.url, stdin=b'{"from": "stdin"}')
    assert out.returncode == 0 and json.loads(out.stdout)["echo"] == {"from": "stdin"}, out.stderr
    out = hydro("invoke", "echo", "--data-raw", '"@not-a-file"', "--gateway", gateway.url)
    assert out.returncode == 0 and json.loads(out.stdout)["echo"] == "@not-a-file", out.stderr


# ---- 17: INVOCATIONS counts invocations only, and survives a restart ------------------------------------


def test_invocations_count_only_invocations_and_persist(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(python_spec("echo", echo_dir, scale={"idle": 300}))
    assert gateway.invoke("echo", {"a": 1})[0] == 200
    assert gateway.invoke("echo", {"a": 2})[0] == 200
    # not invocations: the runtime's probes and metrics, V2 metadata, and a body refused with 415
    for method, path, headers, body in (
        ("GET", "/function/echo/_/ready", {}, None),
        ("GET", "/function/echo/_/health", {}, None),
        ("GET", "/function/echo/metrics", {}, None),
        ("GET", "/function/echo/v2/models/echo", {}, None),
        ("GET", "/function/echo/v2/models/echo/ready", {}, None),
        ("POST", "/function/echo/v2/models/echo/infer", {"Content-Type": "image/png"}, b"\x89PNG"),
    ):
        status = http(method, gateway.url + path, body, headers)[0]
        assert status != 404 or path.endswith("/metrics"), (path, status)
    assert http("POST", gateway.url + "/function/echo/v2/models/echo/infer", b"\x89PNG",
                {"Content-Type": "image/png"})[0] == 415
    assert gateway.status("echo")["invocationCount"] == 2
    assert gateway.metric("hydro_gateway_invocations_total", function="echo", status="200") == 2
    assert gateway.metric("hydro_gateway_invocations_total", function="echo", status="415") == 0

    gateway.restart()  # counted at shutdown, read back at start
    assert gateway.status("echo")["invocationCount"] == 2
    assert gateway.invoke("echo", {"a": 3})[0] == 200
    assert gateway.status("echo")["invocationCount"] == 3
    gateway.wait_for(lambda: _stored_count(gateway, "echo") == 3, timeout=15,
                     what="the batched write of the count")  # written without a stop too

    status, _ = gateway.admin("DELETE", "/system/functions", {"functionName": "echo"})
    assert status in (200, 202, 204)
    gateway.deploy(python_spec("echo", echo_dir))
    assert gateway.status("echo")["invocationCount"] == 0  # a removed function's count goes with it


def _stored_count(gateway: Any, name: str) -> int | None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(gateway.state_dir / "gateway.db")) as db:
        row = db.execute("SELECT count FROM invocation_counts WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


# ---- 17: Ctrl-C on hydro logs --follow, and a stop while a log is followed -------------------------------


def _follow(gateway: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "hydro_serving.cli.main", "logs", "echo", "--follow",
                             "--gateway", gateway.url], env={**os.environ, "HYDRO_STATE": str(gateway.state_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the stream is open once the first line of the log arrived
    assert first, proc.stderr.read() if proc.stderr else ""
    return proc


def test_ctrl_c_on_logs_follow_leaves_no_error_in_the_gateway_log(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(python_spec("echo", echo_dir, scale={"idle": 300}))
    assert gateway.invoke("echo", {"a": 1})[0] == 200
    follower = _follow(gateway)
    follower.send_signal(signal.SIGINT)
    assert follower.wait(30) == 130
    gateway.wait_for(lambda: "log stream of echo: the reader went away" in gateway.log(), timeout=10,
                     what="the gateway to notice the reader left")
    assert gateway.invoke("echo", {"a": 2})[0] == 200  # still serving
    gateway.stop()
    log = gateway.log()
    assert " ERROR " not in log and "Traceback" not in log and "Task was destroyed" not in log, log[-3000:]
    assert "stopping: no request in flight" in log and "stopped in" in log
    assert "stopping: 1 replica(s) of echo (1) (SIGTERM, then SIGKILL after" in log  # what the stop waited for is said


def test_a_followed_log_does_not_hold_the_gateway_stop(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(python_spec("echo", echo_dir, scale={"idle": 300}))
    assert gateway.invoke("echo", {"a": 1})[0] == 200
    follower = _follow(gateway)
    try:
        gateway.stop()
        assert follower.wait(30) == 0  # the stream ended cleanly, the CLI exits 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    log = gateway.log()
    assert "log stream of echo: closed, the gateway is stopping" in log
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


# ---- 15: hydro run serves with a replica's workers ------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_hydro_run_starts_the_workers_a_replica_would(tmp_path: Path, iris_model_file: Path) -> None:
    from hydro_serving.runtime.server import default_workers
    from hydro_serving.templates import get_template

    (tmp_path / "stack.yml").write_text(f"""\
version: "1.0"
provider:
  name: hydro
functions:
  iris:
    lang: sklearn
    model: {iris_model_file}
""")
    port = free_port()
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hydro_serving.cli.main", "run", "iris", "--port", str(port)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={k: v for k, v in os.environ.items() if k not in ("HYDRO_WORKERS",
                                                                                      "HYDRO_THREADS")})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                if http("GET", f"http://127.0.0.1:{port}/_/ready", timeout=2)[0] == 200:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"hydro run not ready: {log.read_text()}")
        expected = default_workers(get_template("sklearn"))
        assert f"{expected} worker(s)" in log.read_text()
        assert len(_children(proc.pid)) == expected, log.read_text()
        status, _, body = http("POST", f"http://127.0.0.1:{port}/", [[5.1, 3.5, 1.4, 0.2]],
                               {"Content-Type": "application/json"})
        assert status == 200, body
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
