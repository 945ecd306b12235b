"""Starting Hydro Serving's own parts the way users do: the runtime process, the gateway, deploys.

Only public entry points are used (``python -m hydro_serving.runtime``, ``python -m
hydro_serving.cli.main gateway``, the gateway's admin API with the token from its state
directory), so the numbers are those of the product as shipped, not of an in-process shortcut.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs


def runtime_argv(spec_path: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "hydro_serving.runtime", "--spec", str(spec_path), "--port", str(port),
            "--host", "127.0.0.1"]


def start_runtime(spec: dict[str, Any], work: Path, name: str | None = None,
                  env: dict[str, str] | None = None, timeout: float = 90.0) -> tuple[procs.Server, str]:
    """A function served by the runtime directly (no gateway); waits for ``/_/ready``. ``(server, url)``."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / f"{spec['name']}.spec.json"
    spec_path.write_text(json.dumps(spec))
    port = procs.free_port()
    server = procs.start(name or f"runtime-{spec['name']}", runtime_argv(spec_path, port), work, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(server, url + "/_/ready", timeout)
    except BaseException:
        server.stop()
        raise
    return server, url


class Gateway:
    """A gateway process with its own state directory, and the admin calls the cases need."""

    def __init__(self, work: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.env = env  # e.g. {"HYDRO_REPLICA_TRANSPORT": "tcp"}: replicas on ports a client can call directly
        self.state = work / "gateway-state"
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.server: procs.Server | None = None

    def start(self, timeout: float = 60.0) -> None:
        argv = [sys.executable, "-m", "hydro_serving.cli.main", "gateway", "--port", str(self.port),
                "--state", str(self.state), *self.extra_args]
        self.server = procs.start(f"gateway-{self.port}", argv, self.work, env=self.env)
        procs.wait_ready(self.server, self.url + "/healthz", timeout)

    def stop(self) -> None:
        """SIGTERM (the gateway stops its replicas), then make sure no replica it started survives."""
        if self.server is None:
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.server.extra_pids.update(self.replica_pids())
        self.server.stop()
        self.server = None

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- admin ------------------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return json.loads((self.state / "credentials.json").read_text())["token"]

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        status, _, raw = procs.http(method, self.url + path, data, {"Authorization": f"Bearer {self.token}"})
        return status, (json.loads(raw) if raw else None)

    def deploy(self, spec: dict[str, Any]) -> None:
        """Create or update a function (the canonical spec dict); raises when the gateway refuses it."""
        body = {"service": spec["name"], "hydro": spec}
        status, out = self.admin("PUT", "/system/functions", body)
        if status == 404:
            status, out = self.admin("POST", "/system/functions", body)
        if status != 202:
            raise RuntimeError(f"the gateway refused {spec['name']}: {status} {out}")

    def scale(self, name: str, replicas: int) -> None:
        status, out = self.admin("POST", f"/system/scale-function/{name}", {"replicas": replicas})
        if status != 202:
            raise RuntimeError(f"scale {name} to {replicas}: {status} {out}")

    def replicas(self, name: str | None = None) -> list[dict[str, Any]]:
        _, functions = self.admin("GET", "/system/functions")
        return [i for f in functions if name in (None, f["name"]) for i in f["status"]["instances"]]

    def replica_pids(self, name: str | None = None) -> list[int]:
        return [i["pid"] for i in self.replicas(name) if i.get("pid")]

    def wait_replicas(self, name: str, count: int, timeout: float = 30.0) -> None:
        """Until ``name`` has exactly ``count`` replicas (0: all stopped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.replicas(name)) == count:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{name} did not reach {count} replicas in {timeout:.0f}s: {self.replicas(name)}")

    def function_url(self, name: str) -> str:
        return f"{self.url}/function/{name}"

    def invoke(self, name: str, body: bytes, timeout: float = 120.0) -> tuple[int, dict[str, str], bytes]:
        return procs.http("POST", self.function_url(name), body, timeout=timeout)

    def warm(self, name: str, body: bytes, timeout: float = 120.0) -> None:
        """One successful call, so load starts on a ready replica (raises with the body otherwise)."""
        status, _, raw = self.invoke(name, body, timeout)
        if status != 200:
            raise RuntimeError(f"warm-up call to {name} answered {status}: {raw[:500]!r}")

    def metrics_text(self) -> str:
        return procs.http("GET", self.url + "/metrics")[2].decode()


def replica_get(replica: dict[str, Any], path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """GET ``path`` from a replica as listed by the gateway: over its unix socket when it has one, else TCP."""
    sock_path = replica.get("socket")
    if not sock_path:
        status, _, raw = procs.http("GET", replica["endpoint"] + path, timeout=timeout)
        return status, raw
    import http.client
    import socket

    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(sock_path)
    conn.sock = sock
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def process_cpu_seconds(pid: int, exclude: tuple[int, ...] = ()) -> float:
    """User + system CPU seconds used so far by ``pid``'s process tree (minus ``exclude``'s subtrees), Linux /proc."""
    from bench import cpu

    return cpu.tree_cpu_seconds(pid, exclude)


def gateway_trees(gw: Gateway, functions: dict[str, str]) -> dict[str, Any]:
    """The process trees of a gateway run, for bench.cpu: ``gateway`` and one per function label.

    ``functions`` maps a label (``replica``, ``router``) to a function name; each label's tree is every
    replica of that function with its gunicorn workers. The gateway's tree leaves out all its replicas
    (they are its zygote's children) so that each CPU second is counted once.
    """
    from bench import cpu

    if gw.server is None or gw.server.proc is None:
        raise RuntimeError("the gateway is not running")
    _, listed = gw.admin("GET", "/system/functions")  # one admin call: it costs the gateway CPU too
    by_name = {f["name"]: tuple(i["pid"] for i in f["status"]["instances"] if i.get("pid")) for f in listed}
    pids = {label: by_name.get(name, ()) for label, name in functions.items()}
    every = tuple(pid for group in by_name.values() for pid in group)
    return {"gateway": cpu.Tree((gw.server.proc.pid,), exclude=every),
            **{label: cpu.Tree(roots) for label, roots in pids.items()}}


def ready_replicas(gw: Gateway, counts: dict[str, int], timeout: float = 120.0) -> None:
    """Scale each function to its count and wait until that many replicas are ready and answer ``/_/ready`` 200.

    A benchmark then never measures a replica starting or loading its model during a point.
    """
    for name, count in counts.items():
        if len([r for r in gw.replicas(name) if r.get("state") == "ready"]) < count:
            gw.scale(name, count)
    deadline = time.monotonic() + timeout
    while True:
        pending = {}
        for name, count in counts.items():
            ready = [r for r in gw.replicas(name) if r.get("state") == "ready"]
            answering = [r for r in ready if _answers_ready(r)]
            if len(answering) < count:
                pending[name] = f"{len(answering)}/{count} ready"
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not ready after {timeout:.0f}s: {pending}")
        time.sleep(0.1)


def _answers_ready(replica: dict[str, Any]) -> bool:
    with contextlib.suppress(OSError):
        return replica_get(replica, "/_/ready", timeout=5)[0] == 200
    return False


def scale_max(gw: Gateway, name: str) -> int:
    """The function's ``scale.max`` as the gateway resolved it (defaults included)."""
    status, out = gw.admin("GET", f"/system/function/{name}")
    if status != 200:
        raise RuntimeError(f"no function {name}: {status} {out}")
    return int(out["hydro"]["scale"]["max"])


def replica_counts(gw: Gateway, names: tuple[str, ...]) -> dict[str, int]:
    """Replicas per function right now (recorded in each point: a scale-up during a run shows)."""
    return {name: len(gw.replicas(name)) for name in names}


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0.0 when absent)."""
    want = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        if key == name and not labels:
            return float(value)
        if key.startswith(name + "{") and sorted(key[len(name) + 1:-1].split(",")) == want:
            return float(value)
    return 0.0
