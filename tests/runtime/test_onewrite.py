"""runtime/onewrite.py: head and body in one write when the body is the whole answer, gunicorn's writes otherwise.

Real gunicorn objects on a real socket pair: the request is parsed by gunicorn's own parser from bytes
sent on one end, the response written by :class:`OneWriteResponse` to the other, and read back and
parsed on the first end. The socket counts its ``sendall`` calls (a subclass of the real socket, not a
mock), which is how the test sees one write instead of two.
"""

from __future__ import annotations

import socket
from typing import Any

from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from hydro_serving.runtime import onewrite
from hydro_serving.runtime.onewrite import OneWriteResponse


class CountingSocket(socket.socket):
    """A real socket that counts its sendall calls."""

    sends = 0

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        self.sends += 1
        super().sendall(data, flags)


def answer(method: str, status: str, headers: list[tuple[str, str]], items: list[bytes]) -> tuple[bytes, int]:
    """(bytes the client received, sendall calls) for one request answered with ``items``."""
    client, server = socket.socketpair()
    counting = CountingSocket(fileno=server.detach())
    try:
        client.sendall(f"{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        cfg = Config()
        request = next(iter(RequestParser(cfg, counting, ("127.0.0.1", 1))))
        response = OneWriteResponse(request, counting, cfg)
        response.start_response(status, headers)
        for item in items:
            response.write(item)
        response.close()
        counting.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := client.recv(65536):
            data += chunk
        return data, counting.sends
    finally:
        client.close()
        counting.close()


def test_a_whole_body_goes_with_its_head_in_one_write() -> None:
    data, sends = answer("POST", "200 OK", [("Content-Type", "application/json"), ("Content-Length", "3")], [b"[0]"])
    assert sends == 1
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 3" in head and body == b"[0]"


def test_an_error_answer_with_a_length_is_one_write_too() -> None:
    payload = b'{"error":"no","code":"bad_request"}'
    data, sends = answer("POST", "400 BAD REQUEST", [("Content-Length", str(len(payload)))], [payload])
    assert sends == 1 and data.endswith(b"\r\n\r\n" + payload)


def test_head_chunked_and_piecewise_bodies_keep_gunicorns_writes() -> None:
    data, _ = answer("HEAD", "200 OK", [("Content-Length", "3")], [b"[0]"])
    assert data.endswith(b"\r\n\r\n")  # HEAD: no body on the wire
    data, sends = answer("POST", "200 OK", [], [b"ab", b"cd"])  # no length: chunked, as gunicorn frames it
    assert sends > 1 and data.endswith(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
    data, sends = answer("POST", "200 OK", [("Content-Length", "4")], [b"ab", b"cd"])  # in two items
    assert sends == 3 and data.endswith(b"\r\n\r\nabcd")
    data, _ = answer("POST", "204 NO CONTENT", [], [b""])
    assert data.startswith(b"HTTP/1.1 204") and data.endswith(b"\r\n\r\n")


def test_install_makes_gunicorn_build_the_one_write_response() -> None:
    original = wsgi.Response
    try:
        onewrite.install()
        assert wsgi.Response is OneWriteResponse
    finally:
        wsgi.Response = original  # type: ignore[misc]
