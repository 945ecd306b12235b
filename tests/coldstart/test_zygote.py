"""Replicas forked by pre-imported template processes (zygotes), through a real gateway on 127.0.0.1.

Which process started a replica is read from ``/proc`` (its parent): a zygote's command line is
``python -m hydro_serving.runtime.zygote``; without zygotes the parent is the gateway itself.
Nothing here measures time: bounded waits only (the benchmark measures cold starts).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_fixtures import pid_alive, python_spec, write_handler

HANDLER = '''
import os
import sys
import time


def handle(payload, context):
    if isinstance(payload, dict) and payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    print(f"handled by {os.getpid()} of {os.environ['HYDRO_FUNCTION_NAME']}", flush=True)
    return {"pid": os.getpid(), "version": os.environ.get("VERSION"), "cwd": os.getcwd(),
            "threads": os.environ.get("OMP_NUM_THREADS")}
'''


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1]); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent_of(pid: int) -> int:
    fields = proc_stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def is_zygote(pid: int) -> bool:
    """A forked replica keeps the zygote's command line; the process name tells them apart."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip() == "hydro-zygote"
    return False


def zygote_of(worker: int) -> int:
    """The process that forked the replica whose gunicorn worker is ``worker`` (handlers run in workers)."""
    return parent_of(parent_of(worker))


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (replicas, their gunicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def wait_until(predicate: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def serve(gateway: Any, name: str) -> dict[str, Any]:
    status, _, body = gateway.invoke(name, {"x": 1})
    assert status == 200, body
    return body


@pytest.fixture
def fn_dir(tmp_path: Path) -> Path:
    return write_handler(tmp_path / "fn", HANDLER)


def test_zygote_replicas_serve_with_their_own_env_cwd_and_log(gateway: Any, fn_dir: Path,
                                                              iris_model_file: Path) -> None:
    gateway.deploy(python_spec("alpha", fn_dir, environment={"VERSION": "a"}))
    gateway.deploy(python_spec("beta", fn_dir, environment={"VERSION": "b"}))
    gateway.deploy({"name": "iris", "lang": "sklearn", "model": str(iris_model_file),
                    "scale": {"min": 0, "max": 1, "idle": 300, "concurrency": 8}})
    alpha, beta = serve(gateway, "alpha"), serve(gateway, "beta")
    assert (alpha["version"], beta["version"]) == ("a", "b")  # one zygote, each child its function's env
    assert alpha["cwd"] == beta["cwd"] == str(fn_dir)
    zygote = zygote_of(alpha["pid"])
    assert is_zygote(zygote) and zygote_of(beta["pid"]) == zygote
    assert parent_of(zygote) == gateway.proc.pid

    status, _, body = gateway.invoke("iris", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert status == 200 and body == [0, 2], body
    iris_pid = gateway.replica_pids("iris")[0]
    assert is_zygote(parent_of(iris_pid)) and parent_of(iris_pid) != zygote  # a zygote per template

    log = (gateway.state_dir / "logs" / "alpha.log").read_text()
    assert f"handled by {alpha['pid']} of alpha" in log  # stdout of the forked child lands in its function's log
    assert "Booting worker" in log and "beta" not in log


def test_import_time_environment_gets_its_own_zygote(gateway: Any, fn_dir: Path) -> None:
    gateway.deploy(python_spec("plain", fn_dir))
    gateway.deploy(python_spec("tuned", fn_dir, environment={"OMP_NUM_THREADS": "1"}))
    plain, tuned = serve(gateway, "plain"), serve(gateway, "tuned")
    assert tuned["threads"] == "1"
    assert is_zygote(zygote_of(tuned["pid"])) and zygote_of(tuned["pid"]) != zygote_of(plain["pid"])


def test_killed_child_is_dead_in_flight_gets_502_and_next_request_restarts(gateway: Any, fn_dir: Path) -> None:
    gateway.deploy(python_spec("crash", fn_dir))
    first = serve(gateway, "crash")["pid"]
    replica = gateway.replica_pids("crash")[0]
    result: dict[str, Any] = {}
    slow = threading.Thread(target=lambda: result.update(reply=gateway.invoke("crash", {"sleep": 20})))
    slow.start()
    wait_until(lambda: gateway.status("crash")["status"]["instances"][0]["inflight"] == 1, "the call is in flight")
    os.killpg(replica, signal.SIGKILL)
    slow.join(60)
    assert result["reply"][0] == 502, result
    wait_until(lambda: not gateway.replica_pids("crash"), "the gateway forgets the dead replica")
    again = serve(gateway, "crash")["pid"]
    assert again != first and is_zygote(zygote_of(again))


def test_a_dead_zygote_is_started_again(gateway: Any, fn_dir: Path) -> None:
    gateway.deploy(python_spec("phoenix", fn_dir))
    old_zygote = zygote_of(serve(gateway, "phoenix")["pid"])
    os.kill(old_zygote, signal.SIGKILL)  # its replicas die with it (PR_SET_PDEATHSIG)
    wait_until(lambda: not gateway.replica_pids("phoenix"), "the replica of the dead zygote is gone")
    pid = serve(gateway, "phoenix")["pid"]
    new_zygote = zygote_of(pid)
    assert is_zygote(new_zygote) and new_zygote != old_zygote and not pid_alive(old_zygote)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_gateway_shutdown_leaves_no_zygote_or_replica(gateway: Any, fn_dir: Path, how: str) -> None:
    gateway.deploy(python_spec("one", fn_dir))
    gateway.deploy(python_spec("two", fn_dir, environment={"OMP_NUM_THREADS": "1"}))
    serve(gateway, "one")
    serve(gateway, "two")
    below = descendants(gateway.proc.pid)
    assert sum(1 for p in below if is_zygote(p)) == 2 and len(below) >= 6  # 2 zygotes, 2 arbiters, 2 workers
    if how == "sigkill":  # no clean-up code runs: only the death signals chain gateway -> zygote -> replica
        os.kill(gateway.proc.pid, signal.SIGKILL)
        gateway.proc.wait(10)
    else:
        gateway.stop()
    wait_until(lambda: not any(pid_alive(p) for p in below), f"every process below the gateway is gone ({how})")


def test_zygote_off_starts_plain_processes(gateway_factory: Any, fn_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRO_ZYGOTE", "0")
    gateway = gateway_factory()
    gateway.deploy(python_spec("plain", fn_dir, environment={"VERSION": "p"}))
    body = serve(gateway, "plain")
    assert body["version"] == "p" and zygote_of(body["pid"]) == gateway.proc.pid
    assert not any(is_zygote(p) for p in descendants(gateway.proc.pid))
