"""How the gateway reaches one replica: the shared TCP session, or a session over the replica's unix socket.

A local replica listens on a unix socket in its function's private run folder (the provider chose
it, see :mod:`hydro_serving.gateway.providers.local`); the gateway talks to it through an
``aiohttp.UnixConnector`` of its own, whose keep-alive pool is sized to the function's
``scale.concurrency``. Why a unix socket: no TCP/IP stack, no port a neighbour could connect to,
and the socket's folder keeps other functions out by file permissions (uid sandbox) or by not
being visible at all (user-namespace sandbox).

Each new connection is checked with ``SO_PEERCRED``: the process listening must be the replica's
own (its pid). A function that swaps the socket path for a link to another function's socket (its
run folder is writable by it) would otherwise have the gateway send its callers to that function.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

import aiohttp
from aiohttp.client_exceptions import UnixClientConnectorError

from hydro_serving.gateway.providers.base import Replica

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# idle keep-alive connections are closed by the gateway first: the runtime (gunicorn) keeps them 30 s, and a
# request sent on a connection the server is closing at that instant would be a 502
KEEPALIVE = 15.0


def peer_credentials(sock: Any) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of the process that listens at the other end of a unix connection (Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size)
    except OSError:
        return None
    return _PEERCRED.unpack(raw)


class ReplicaConnector(aiohttp.UnixConnector):
    """A unix-socket connector that only keeps connections whose listener is the expected process."""

    def __init__(self, path: str, expected_pid: int | None, limit: int) -> None:
        super().__init__(path, limit=limit, keepalive_timeout=KEEPALIVE)
        self.expected_pid = expected_pid

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        if self.expected_pid is None:
            return proto
        transport = proto.transport
        creds = peer_credentials(transport.get_extra_info("socket") if transport is not None else None)
        if creds is not None and not is_replica_process(creds[0], self.expected_pid):
            if transport is not None:
                transport.close()
            raise UnixClientConnectorError(self.path, req.connection_key, ConnectionRefusedError(
                111, f"the process listening on {self.path} (pid {creds[0]}) is not the replica's "
                     f"(pid {self.expected_pid})"))
        return proto


def is_replica_process(pid: int, replica_pid: int) -> bool:
    """The replica's leader itself, or a process of its process group (the provider starts each in its own)."""
    if pid == replica_pid:
        return True
    try:
        return os.getpgid(pid) == replica_pid
    except OSError:
        return False


def replica_session(replica: Replica, concurrency: int) -> aiohttp.ClientSession:
    """The client session for a replica on a unix socket: a keep-alive pool of ``concurrency`` connections.

    The same settings as the shared TCP session (:func:`hydro_serving.gateway.proxy.new_session`):
    no cookie jar, no decompression, no default headers.
    """
    assert replica.socket is not None
    connector = ReplicaConnector(replica.socket, replica.pid, limit=max(1, concurrency))
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                                 skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"))
