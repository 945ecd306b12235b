"""A crashed replica (or a crashed worker inside one) is never handed a request before it is ready.

The runtime serves with gunicorn: the replica's pid is the arbiter, requests are served by a
worker. A worker that dies is replaced by the arbiter inside the same replica, and the new worker
answers ``503 "... is loading"`` until its model is loaded. The gateway must notice, take that
replica out of rotation until ``/_/ready`` says 200 again, and hold (then retry) the requests
that arrive meanwhile: no client may see the runtime's ``loading`` 503.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SLOW_LOAD = '''
import os
import time

# a model-sized load: the runtime imports this module in its loader, so a worker is not ready before it ends
time.sleep(float(os.environ.get("LOAD_SLEEP", "0")))


def handle(payload, context):
    """Report the serving process; crash this worker when asked to."""
    if isinstance(payload, dict) and payload.get("crash"):
        os._exit(1)
    return {"worker": os.getpid(), "echo": payload}
'''


@pytest.fixture
def slow_dir(tmp_path: Path, gateway: Any) -> Path:
    return gateway.write_handler(tmp_path / "slow", SLOW_LOAD)


def _deploy(gateway: Any, folder: Path, **scale: Any) -> None:
    gateway.deploy(gateway.python_spec("slow", folder, environment={"LOAD_SLEEP": "1.5"},
                                       scale={"max": 1, **scale}))


def _burst(gateway: Any, n: int = 4) -> list[tuple[int, dict[str, str], Any]]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: gateway.invoke("slow", {"n": i}, timeout=90), range(n)))


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (from /proc: the workers of a gunicorn arbiter)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _assert_all_ok(gateway: Any, results: list[tuple[int, dict[str, str], Any]]) -> None:
    bad = [(status, body) for status, _, body in results if status != 200]
    assert not bad, f"{bad[:2]}\ngateway log:\n{gateway.log()[-3000:]}"


def test_worker_crash_mid_request_then_next_requests_wait_for_ready(gateway: Any, slow_dir: Path) -> None:
    _deploy(gateway, slow_dir)
    status, _, body = gateway.invoke("slow", {}, timeout=90)
    assert status == 200, body
    first_worker = body["worker"]
    [replica_pid] = gateway.replica_pids("slow")
    status, _, body = gateway.invoke("slow", {"crash": True})
    assert status == 502, body
    assert body["function"] == "slow"
    # the arbiter replaces the worker, which loads for 1.5 s: every request must wait for it, none may
    # see the runtime's 503 "loading"
    results = _burst(gateway)
    _assert_all_ok(gateway, results)
    assert {body["worker"] for _, _, body in results} != {first_worker}
    assert gateway.replica_pids("slow") == [replica_pid]  # the same replica, recovered (not replaced)
    assert gateway.metric("hydro_gateway_replica_recoveries_total", function="slow", reason="disconnected") == 1


def test_worker_killed_while_idle_is_not_served_to_while_loading(gateway: Any, slow_dir: Path) -> None:
    _deploy(gateway, slow_dir)
    status, _, body = gateway.invoke("slow", {}, timeout=90)
    assert status == 200, body
    [replica_pid] = gateway.replica_pids("slow")
    os.kill(body["worker"], signal.SIGKILL)  # the gateway cannot see this: its replica (the arbiter) lives on
    # A request written onto the dead worker's kept-alive connection before the gateway's loop has seen
    # it close is in flight at the crash (a 502: the gateway cannot know it did not run). Wait until the
    # arbiter has forked the replacement worker, which is what this test is about: it is loading now.
    gateway.wait_for(lambda: _children(replica_pid) - {body["worker"]}, what="the replacement worker")
    results = _burst(gateway)
    _assert_all_ok(gateway, results)
    assert body["worker"] not in {b["worker"] for _, _, b in results}
    assert gateway.replica_pids("slow") == [replica_pid]
    assert gateway.metric("hydro_gateway_replica_recoveries_total", function="slow", reason="loading") >= 1


def test_replica_killed_then_replacement_is_used_only_when_ready(gateway: Any, slow_dir: Path) -> None:
    _deploy(gateway, slow_dir, min=1)
    gateway.wait_for(lambda: gateway.status("slow")["availableReplicas"] == 1, timeout=60, what="a warm replica")
    [pid] = gateway.replica_pids("slow")
    os.kill(pid, signal.SIGKILL)
    # once the gateway has seen the crash, scale.min starts a replacement that loads for 1.5 s
    gateway.wait_for(lambda: gateway.metric("hydro_gateway_replica_stops_total", function="slow", reason="crash") == 1,
                     what="the gateway to notice the crash")
    results = _burst(gateway)
    _assert_all_ok(gateway, results)
    assert pid not in gateway.replica_pids("slow")
    gateway.wait_for(lambda: not gateway.pid_alive(pid), what="the killed replica to be reaped")
