"""Local replicas on unix sockets (issue 17 point 3): served, private, removed at stop, stale ones replaced.

Real gateways (local provider, root here so the uid sandbox is on), real replicas; the hostile
function is real code trying to connect to another function's socket and to the gateway's own
unix socket. The peer-credential check of the gateway's connector is tested against a real aiohttp
server on a unix socket in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hydro_serving.gateway.providers.base import Replica
from hydro_serving.gateway.upstream import peer_credentials, replica_session

HOSTILE = '''
import os
import socket


def attempt(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
        sock.sendall(b"GET /healthz HTTP/1.0\\r\\n\\r\\n")
        return {"ok": True, "got": sock.recv(100).decode(errors="replace")}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    finally:
        sock.close()


def handle(payload, context):
    out = {name: attempt(path) for name, path in payload["connect"].items()}
    run = payload.get("own_run")
    if run:
        out["own run folder"] = {"ok": True, "got": sorted(os.listdir(run))}
    return out
'''


def _unix_get(path: str, target: str) -> int:
    """The status of ``GET target`` over the unix socket at ``path``."""
    import http.client

    conn = http.client.HTTPConnection("localhost", timeout=5)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.settimeout(5)
    conn.sock.connect(path)
    try:
        conn.request("GET", target)
        return conn.getresponse().status
    finally:
        conn.close()


def _instance(gw: Any, name: str) -> dict[str, Any]:
    return gw.status(name)["status"]["instances"][0]


def _wait_gone(gw: Any, path: str) -> None:
    gw.wait_for(lambda: not os.path.lexists(path), what=f"{path} removed")


def test_replica_serves_on_a_private_socket_removed_at_stop(gateway: Any, tmp_path: Path) -> None:
    gw = gateway
    gw.deploy(gw.python_spec("echo", gw.write_handler(tmp_path / "echo")))
    status, _, body = gw.invoke("echo", {"hello": 1})
    assert status == 200 and body["echo"] == {"hello": 1}, body
    instance = _instance(gw, "echo")
    sock = instance["socket"]
    assert instance["endpoint"] == "http://localhost"
    assert sock == str(gw.state_dir / "functions" / "echo" / "run" / "1.sock")
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    run = os.lstat(Path(sock).parent)
    assert stat.S_IMODE(run.st_mode) == 0o700 and run.st_uid == st.st_uid  # the replica's own folder
    if os.geteuid() == 0:  # uid sandbox: the function's uid owns it, not the gateway's
        assert st.st_uid != 0
    # the replica listens on no TCP port of its own
    pid = instance["pid"]
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    tcp = Path("/proc/net/tcp").read_text().splitlines()[1:] + Path("/proc/net/tcp6").read_text().splitlines()[1:]
    listening = {f"socket:[{line.split()[9]}]" for line in tcp if line.split()[3] == "0A"}
    assert not inodes & listening
    # keep-alive: many calls, all answered
    for i in range(20):
        assert gw.invoke("echo", {"i": i})[0] == 200
    status, _ = gw.admin("POST", "/system/scale-function/echo", {"replicas": 0})
    assert status == 202
    _wait_gone(gw, sock)
    gw.wait_for(lambda: not gw.pid_alive(pid), what="replica stopped")
    assert gw.invoke("echo", {"again": True})[0] == 200  # a cold start on a fresh socket
    assert os.path.exists(_instance(gw, "echo")["socket"])


def test_stale_socket_of_a_killed_gateway_is_replaced(gateway_factory: Any, tmp_path: Path) -> None:
    gw = gateway_factory()
    gw.deploy(gw.python_spec("echo", gw.write_handler(tmp_path / "echo")))
    assert gw.invoke("echo", {})[0] == 200
    sock = _instance(gw, "echo")["socket"]
    gw.replica_pids()
    gw.stop(signal.SIGKILL)  # the replica dies with it (parent-death signal): its socket file usually stays
    if not os.path.lexists(sock):  # the dying replica removed it first: leave one as a SIGKILLed replica does
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(sock)
        stale.close()
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    gw.start()
    assert gw.invoke("echo", {"after": "restart"})[0] == 200  # same replica id, same path: replaced
    assert _instance(gw, "echo")["socket"] == sock
    # a regular file planted where the next replica's socket goes does not stop it either
    gw.admin("POST", "/system/scale-function/echo", {"replicas": 0})
    _wait_gone(gw, sock)
    planted = Path(sock).with_name("2.sock")
    planted.write_text("not a socket")
    assert gw.invoke("echo", {"after": "planted"})[0] == 200
    assert stat.S_ISSOCK(os.lstat(planted).st_mode)


def test_tcp_switch_for_debugging(gateway_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYDRO_REPLICA_TRANSPORT", "tcp")
    gw = gateway_factory()
    gw.deploy(gw.python_spec("echo", gw.write_handler(tmp_path / "echo")))
    assert gw.invoke("echo", {"x": 1})[0] == 200
    instance = _instance(gw, "echo")
    assert "socket" not in instance and instance["endpoint"].startswith("http://127.0.0.1:")
    assert gw.http("GET", instance["endpoint"] + "/_/health")[0] == 200  # curl-able, the point of the switch
    assert not os.listdir(gw.state_dir / "functions" / "echo" / "run")


def test_a_typo_in_the_switch_stops_the_gateway(gateway_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRO_REPLICA_TRANSPORT", "udp")
    with pytest.raises(RuntimeError) as info:
        gateway_factory()
    assert "HYDRO_REPLICA_TRANSPORT must be unix or tcp" in str(info.value)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("mode", ["auto", "userns"])
def test_hostile_function_cannot_reach_other_sockets(gateway_factory: Any, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, mode: str) -> None:
    """Another function's socket and the gateway's own unix socket are out of a function's reach."""
    monkeypatch.setenv("HYDRO_SANDBOX", mode)
    state = tmp_path / "s"
    gw_sock = state / "gw.sock"
    gw = gateway_factory("--unix-socket", str(gw_sock), state_dir=state)
    gw.deploy(gw.python_spec("victim", gw.write_handler(tmp_path / "victim")))
    assert gw.invoke("victim", {})[0] == 200
    victim = _instance(gw, "victim")["socket"]
    gw.deploy(gw.python_spec("hostile", gw.write_handler(tmp_path / "hostile", HOSTILE)))
    payload = {"connect": {"victim": victim, "gateway": str(gw_sock), "victim run folder": str(Path(victim).parent)},
               "own_run": str(state / "functions" / "hostile" / "run")}
    status, _, body = gw.invoke("hostile", payload)
    assert status == 200, body
    own = body.pop("own run folder")["got"]
    assert own == ["2.sock"]  # its own socket, nothing else
    assert {name: r for name, r in body.items() if r["ok"]} == {}, body
    # the gateway's socket does answer callers outside the sandbox (same API as the TCP port)
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(str(gw_sock))
    probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert probe.recv(100).split(b" ")[1] == b"200"
    probe.close()


def test_gateway_unix_socket_serves_invocations_and_is_removed_at_stop(gateway_factory: Any, tmp_path: Path) -> None:
    from hydro_serving.transport import open_transport
    from hydro_serving.transport.unix import unix_url

    path = tmp_path / "gw.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a stale socket (nobody listening): replaced at start
    stale.close()
    gw = gateway_factory("--unix-socket", str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    gw.deploy(gw.python_spec("echo", gw.write_handler(tmp_path / "echo")))
    transport = open_transport(unix_url(str(path)))
    reply = transport.invoke("echo", b'{"via": "unix"}', {"Content-Type": "application/json"}, timeout=60)
    assert reply.status == 200 and json.loads(reply.body)["echo"] == {"via": "unix"}
    reply = transport.invoke("nope", b"{}", {"Content-Type": "application/json"}, timeout=10)
    assert reply.status == 404 and b"not deployed" in reply.body
    transport.close()
    gw.stop()
    assert not path.exists()


def test_gateway_refuses_a_socket_path_that_is_not_a_socket(gateway_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(RuntimeError) as info:
        gateway_factory("--unix-socket", str(path))
    assert "exists and is not a socket" in str(info.value)
    assert path.read_text() == "keep me"


@pytest.mark.parametrize("mode", ["auto", "userns"])
def test_router_replicas_get_the_gateway_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """A local router is handed HYDRO_GATEWAY_TRANSPORT (http+unix://...) and the socket in its sandbox;
    a plain function gets neither. (The provider's own computation: a zygote child's /proc environ is the zygote's.)"""
    from hydro_serving.gateway.config import GatewayConfig
    from hydro_serving.gateway.providers.local import LocalProvider
    from hydro_serving.stack import FunctionSpec
    from hydro_serving.transport.unix import unix_url

    monkeypatch.setenv("HYDRO_SANDBOX", mode)
    path = tmp_path / "gw.sock"
    from hydro_serving.gateway.server import bind_unix_socket

    listener = bind_unix_socket(path)  # as the gateway binds it (0666, listening)
    provider = LocalProvider(GatewayConfig(state_dir=tmp_path / "state", unix_socket=path))
    router = FunctionSpec.from_dict({"name": "pipe", "lang": "router", "chain": [{"variants": {"echo": 100}}]})
    (tmp_path / "h").mkdir()
    plain = FunctionSpec.from_dict({"name": "echo", "lang": "python3", "handler": str(tmp_path / "h")})
    provider._function_folder("pipe")
    provider._function_folder("echo")
    try:
        assert provider._environment(router)["HYDRO_GATEWAY_TRANSPORT"] == unix_url(str(path))
        assert "HYDRO_GATEWAY_TRANSPORT" not in provider._environment(plain)
        if provider.sandbox != "off":
            import sys

            router_plan = provider._plan(router, sys.executable)
            plain_plan = provider._plan(plain, sys.executable)
            assert (str(path), False) in router_plan.binds
            assert all(str(path) != p for p, _ in plain_plan.binds)
            # really inside each sandbox (a forked child enters it, as a replica does): the router connects,
            # the plain function finds no such file
            assert _connect_from_sandbox(router_plan, str(path)) == "connected"
            assert _connect_from_sandbox(plain_plan, str(path)) in ("FileNotFoundError", "PermissionError")
    finally:
        listener.close()


def _connect_from_sandbox(plan: Any, path: str) -> str:
    """Fork, enter ``plan`` (mount namespace, uid), try to connect to ``path``; the outcome's name."""
    from hydro_serving.replica import sandbox

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only syscalls, then _exit
        outcome = "error"
        try:
            os.close(read)
            sandbox.enter(plan)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            outcome = "connected"
        except BaseException as exc:
            outcome = type(exc).__name__
        finally:
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        outcome = fh.read().decode()
    os.waitpid(pid, 0)
    return outcome


# ---- the gateway's connector: only the replica's own process -----------------------------------------


def _serve_unix(path: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid()})

    app.router.add_get("/_/health", ok)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.UnixSite(runner, path).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    return loop, thread


def test_connector_refuses_a_socket_another_process_listens_on(tmp_path: Path) -> None:
    """A function that swaps its socket for a link to another's: the gateway's connection is refused."""
    path = str(tmp_path / "other.sock")
    loop, thread = _serve_unix(path)
    link = tmp_path / "mine.sock"
    link.symlink_to(path)

    async def call(expected_pid: int) -> int:
        replica = Replica(id="f-1", function="f", endpoint="http://localhost", pid=expected_pid, socket=str(link))
        session = replica_session(replica, concurrency=4)
        try:
            async with session.get("http://localhost/_/health") as resp:
                return resp.status
        finally:
            await session.close()

    try:
        assert asyncio.run(call(os.getpid())) == 200  # the listener is this process: accepted
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            asyncio.run(call(os.getpid() + 100000))  # not the replica's process: refused, nothing sent
        assert "is not the replica's" in str(info.value)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_peer_credentials_name_the_listening_process(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "s.sock"))
    server.listen(1)
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(tmp_path / "s.sock"))
    try:
        assert peer_credentials(client) == (os.getpid(), os.getuid(), os.getgid())
        assert peer_credentials(None) is None
    finally:
        client.close()
        server.close()


def test_runtime_binds_a_unix_socket_when_told(tmp_path: Path) -> None:
    """``python -m hydro_serving.runtime --unix-socket PATH``: served there (0600), no port, removed at SIGTERM."""
    import subprocess
    import sys
    import time

    from tests.gateway_fixtures import python_spec, write_handler

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(python_spec("echo", write_handler(tmp_path / "h"))))
    path = tmp_path / "r.sock"
    path.write_bytes(b"")  # not a socket: refused with one line, nothing deleted
    bad = subprocess.run([sys.executable, "-m", "hydro_serving.runtime", "--spec", str(spec), "--unix-socket",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "is not a socket" in bad.stderr and path.exists()
    path.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "hydro_serving.runtime", "--spec", str(spec),
                             "--unix-socket", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                status = _unix_get(str(path), "/_/ready")
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert not path.exists()  # a clean stop removes it (the gateway removes it after a SIGKILL)


def test_a_socket_path_past_the_kernel_limit_falls_back_to_tcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from hydro_serving.gateway.config import GatewayConfig
    from hydro_serving.gateway.providers.local import LocalProvider

    monkeypatch.delenv("HYDRO_REPLICA_TRANSPORT", raising=False)
    short = LocalProvider(GatewayConfig(state_dir=tmp_path / "s"))
    assert str(short.socket_path("f", "f-12")).endswith("/s/functions/f/run/12.sock")
    deep = LocalProvider(GatewayConfig(state_dir=tmp_path / ("d" * 100)))
    with caplog.at_level("WARNING", logger="hydro.gateway"):
        assert deep.socket_path("f", "f-12") is None
    assert "listens on TCP" in caplog.text
    monkeypatch.setenv("HYDRO_REPLICA_TRANSPORT", "tcp")
    assert LocalProvider(GatewayConfig(state_dir=tmp_path / "t")).socket_path("f", "f-1") is None


def test_a_local_gateway_listens_on_its_state_socket_by_default(tmp_path: Path, gateway_factory: Any) -> None:
    gw = gateway_factory(state_dir=tmp_path / "a")
    default = gw.state_dir / "gateway.sock"
    assert stat.S_ISSOCK(os.lstat(default).st_mode)
    assert _unix_get(str(default), "/healthz") == 200
    gw.stop()
    assert not default.exists()
    off = gateway_factory("--unix-socket", "off", state_dir=tmp_path / "b")
    assert not (off.state_dir / "gateway.sock").exists()
    assert off.http("GET", off.url + "/healthz")[0] == 200
