"""The invocation hop's client (gateway/replicaclient.py) against real sockets on 127.0.0.1 and unix sockets.

Each test starts a raw asyncio server that answers exactly the bytes the case needs: well-formed
answers in every framing (Content-Length, chunked, end of connection, HEAD, 204, 1xx first) and
hostile or broken ones (cut mid-body, bad status line, an endless head, unsolicited bytes, a stall).
Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hydro_serving.gateway.replicaclient import (
    MAX_HEAD_BYTES,
    ReplicaClient,
    ReplicaDisconnected,
    ReplicaRefused,
    UnsafeHeader,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A raw TCP (or unix) server: counts connections and keeps every request head it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        self.bodies.append(body)
        return head

    async def tcp(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def unix(self, path: str) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), extra)) + body


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while True:
        await server.read_request(reader)
        writer.write(ok(b"%d" % len(server.bodies[-1]), b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"))
        await writer.drain()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_keeps_one_connection_alive_and_keeps_every_header() -> None:
    async def test() -> None:
        server = Server(keep_answering)
        client = ReplicaClient(await server.tcp())
        for i in range(3):
            reply = await client.request("POST", f"/?n={i}", [("X-Request-Id", "r1"), ("Content-Type", "x/y")],
                                         b"abc", 5)
            assert reply.status == 200 and reply.body == b"3"
            assert reply.headers.getall("Set-Cookie") == ["a=1", "b=2"]
            assert reply.headers["content-type"] == "application/json"
        assert server.connections == 1  # kept alive
        head = server.heads[0].decode()
        assert head.startswith("POST /?n=0 HTTP/1.1\r\n") and "Host: 127.0.0.1:" in head
        assert "Content-Length: 3\r\n" in head and "X-Request-Id: r1\r\n" in head
        await client.close()
        await server.close()

    run(test)


def test_a_large_body_arrives_whole() -> None:
    async def test() -> None:
        server = Server(keep_answering)
        client = ReplicaClient(await server.tcp())
        body = os.urandom(300_000)
        reply = await client.request("POST", "/", [], body, 5)
        assert reply.body == b"300000" and server.bodies[0] == body
        await server.close()

    run(test)


@pytest.mark.parametrize("answer, expected", [
    # chunked: the body is de-chunked (the gateway frames its own answer)
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", b"abcdefg"),
    # an interim 103 first: the final answer is the one returned
    (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"final"), b"final"),
    # no body by status
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_framings(answer: bytes, expected: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer)

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        for _ in range(2):  # the connection is left in a clean state for the next answer
            reply = await client.request("POST", "/", [], b"x", 5)
            assert reply.body == expected
        assert server.connections == 1
        await server.close()

    run(test)


def test_an_answer_framed_by_closing_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        await writer.drain()

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        assert (await client.request("GET", "/", [], b"", 5)).body == b"part one, part two"
        assert (await client.request("GET", "/", [], b"", 5)).body == b"part one, part two"
        assert server.connections == 2  # never reused: its end was the end of the connection
        await server.close()

    run(test)


def test_head_returns_without_waiting_for_a_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await asyncio.sleep(10)

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        reply = await client.request("HEAD", "/", [], b"", 5)
        assert reply.status == 200 and reply.body == b"" and reply.headers["Content-Length"] == "1000"
        assert "Content-Length" not in server.heads[0].decode()  # a HEAD carries no body length
        await server.close()

    run(test)


@pytest.mark.parametrize("answer, reason", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", "before its answer was complete"),
    (b"NOT HTTP AT ALL\r\n\r\n", "malformed answer"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed answer"),
    (b"", "before its answer was complete"),
])
def test_broken_answers_are_disconnections(answer: bytes, reason: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        with pytest.raises(ReplicaDisconnected, match=reason):
            await client.request("POST", "/", [], b"x", 5)
        await server.close()

    run(test)


def test_an_endless_head_is_cut_off() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(MAX_HEAD_BYTES // 1000 + 10):
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000))
            await writer.drain()
        await asyncio.sleep(10)

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        with pytest.raises(ReplicaDisconnected, match="head exceeds"):
            await client.request("POST", "/", [], b"x", 5)
        await server.close()

    run(test)


def test_a_stalled_replica_times_out_and_its_connection_is_not_reused() -> None:
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        nonlocal calls
        while True:
            await server.read_request(reader)
            calls += 1
            if calls == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")  # then nothing: slowloris
                await asyncio.sleep(3)
                writer.write(b"cde")  # late: must not become the next request's answer
            else:
                writer.write(ok(b"second"))

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        with pytest.raises(TimeoutError):
            await client.request("POST", "/", [], b"x", 0.3)
        assert (await client.request("POST", "/", [], b"x", 5)).body == b"second"
        assert server.connections == 2
        await server.close()

    run(test)


def test_unsolicited_bytes_never_answer_the_next_request() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            await server.read_request(reader)
            writer.write(ok(b"mine") + ok(b"smuggled"))  # two answers to one request

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        assert (await client.request("POST", "/", [], b"x", 5)).body == b"mine"
        await asyncio.sleep(0.05)
        assert (await client.request("POST", "/", [], b"x", 5)).body == b"mine"
        await server.close()

    run(test)


def test_a_connection_the_replica_closed_while_idle_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(ok(b"once"))  # keep-alive advertised, then closed while idle
        await writer.drain()

    async def test() -> None:
        server = Server(handler)
        client = ReplicaClient(await server.tcp())
        assert (await client.request("POST", "/", [], b"x", 5)).body == b"once"
        await asyncio.sleep(0.1)  # the close is seen by the client before the next request
        assert (await client.request("POST", "/", [], b"x", 5)).body == b"once"
        assert server.connections == 2
        await server.close()

    run(test)


def test_header_injection_is_refused_before_anything_is_sent() -> None:
    async def test() -> None:
        server = Server(keep_answering)
        client = ReplicaClient(await server.tcp())
        for headers, target in (([("X-A", "1\r\nX-Evil: 1")], "/"), ([("X-A\n", "1")], "/"),
                                ([("X-A", "1\0")], "/"), ([], "/ HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /"),
                                ([], "no-slash")):
            with pytest.raises(UnsafeHeader):
                await client.request("POST", target, headers, b"", 5)
        assert server.connections == 0
        await server.close()

    run(test)


def test_refusals_say_nothing_was_sent(tmp_path: Path) -> None:
    async def test() -> None:
        server = Server(keep_answering)
        url = await server.tcp()
        await server.close()
        await asyncio.sleep(0.05)
        with pytest.raises(ReplicaRefused, match="cannot connect"):
            await ReplicaClient(url).request("POST", "/", [], b"x", 5)
        with pytest.raises(ReplicaRefused, match="cannot connect"):
            await ReplicaClient("http://localhost", str(tmp_path / "missing.sock")).request("POST", "/", [], b"", 5)
        live = Server(keep_answering)
        client = ReplicaClient(await live.tcp())
        await client.request("POST", "/", [], b"x", 5)
        await client.close()
        with pytest.raises(ReplicaRefused, match="stopped"):  # a stopped replica's client sends nothing more
            await client.request("POST", "/", [], b"x", 5)
        await live.close()

    run(test)


def test_a_unix_socket_served_by_another_process_is_refused(tmp_path: Path) -> None:
    """A function that links its socket path to another's: the hop refuses, as the aiohttp connector does."""
    async def test() -> None:
        path = str(tmp_path / "other.sock")
        server = Server(keep_answering)
        await server.unix(path)
        link = tmp_path / "mine.sock"
        link.symlink_to(path)
        own = ReplicaClient("http://localhost", str(link), expected_pid=os.getpid())
        assert (await own.request("POST", "/", [], b"ab", 5)).body == b"2"  # the listener is this process
        assert "Host: localhost\r\n" in server.heads[0].decode()
        other = ReplicaClient("http://localhost", str(link), expected_pid=os.getpid() + 100000)
        with pytest.raises(ReplicaRefused, match="is not the replica's"):
            await other.request("POST", "/", [], b"ab", 5)
        assert len(server.heads) == 1  # nothing was sent to the wrong process
        await server.close()

    run(test)


def test_only_plain_http_endpoints() -> None:
    with pytest.raises(ValueError, match="plain http"):
        ReplicaClient("https://127.0.0.1:1")


def test_a_connection_idle_past_the_keepalive_is_not_reused() -> None:
    """Idle connections are dropped before the runtime's own keep-alive closes them (no request on a closing one)."""
    from hydro_serving.gateway.upstream import KEEPALIVE

    async def test() -> None:
        server = Server(keep_answering)
        client = ReplicaClient(await server.tcp())
        await client.request("POST", "/", [], b"x", 5)
        await client.request("POST", "/", [], b"x", 5)
        assert server.connections == 1
        for conn in client._idle_pool:  # as if it had waited KEEPALIVE seconds
            conn.idle_since -= KEEPALIVE + 1
        await client.request("POST", "/", [], b"x", 5)
        assert server.connections == 2
        await server.close()

    run(test)
