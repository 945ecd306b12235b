"""The lean HTTP/1.1 client (transport/wire.py) against real, scripted servers on 127.0.0.1 and unix sockets.

Each server is a real listening socket whose per-connection script decides what goes on the wire
(well-framed answers, chunked bodies, bodies cut short, garbage, one byte every 100 ms), so the
transport's rules are checked against the bytes a hostile or broken server could really send:
connect failures alone are retried, nothing is ever sent twice, answers are bounded in size and
in time, and a kept-alive socket the server closed while idle is never used for a POST.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.transport import TransportError, open_transport
from hydro_serving.transport.http import ConnectRetry, HttpTransport
from hydro_serving.transport.unix import UnixHttpTransport, unix_url

Script = Callable[[socket.socket, "Server"], None]


class Server:
    """A listening socket; every accepted connection runs ``script(conn, server)`` in its own thread."""

    def __init__(self, script: Script, unix_path: str | None = None) -> None:
        self.script = script
        self.requests: list[bytes] = []  # every request head+body read by read_request, in order
        self.connections = 0
        if unix_path is None:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.url = unix_url(unix_path)
        self.sock.listen(16)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.script(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes | None:
        """One request (head + Content-Length body), or None when the client closed the connection."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        return head

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(script: Script, unix_path: str | None = None) -> Server:
        servers.append(Server(script, unix_path))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def answering(*answers: bytes) -> Script:
    """Read a request, send the next answer, keep the connection open for the next request."""

    def script(conn: socket.socket, server: Server) -> None:
        for answer in answers:
            if server.read_request(conn) is None:
                return
            conn.sendall(answer)
        conn.recv(1)  # hold the connection until the client closes it

    return script


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + \
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def transport(server: Server, **kw: Any) -> HttpTransport:
    return open_transport(server.url + "/#{name}" if server.url.startswith("http:") else server.url, {}, **kw)


def fails(call: Callable[[], Any], kind: str) -> TransportError:
    with pytest.raises(TransportError) as info:
        call()
    assert info.value.kind == kind, info.value.message
    return info.value


def test_content_length_answers_reuse_one_kept_alive_socket(serve: Callable[..., Server]) -> None:
    server = serve(answering(*(ok(b'{"n":%d}' % i, b"X-Cold-Start: false\r\n") for i in range(3))))
    client = transport(server)
    for i in range(3):
        reply = client.invoke("f", b"[1]", {"X-Request-Id": "r1"}, timeout=5)
        assert (reply.status, reply.body, reply.headers["x-cold-start"]) == (200, b'{"n":%d}' % i, "false")
    assert server.connections == 1 and len(server.requests) == 3
    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"post / http/1.1") and b"content-length: 3" in head and b"x-request-id: r1" in head
    client.close()


def test_chunked_answers_with_extensions_and_trailers_are_decoded(serve: Callable[..., Server]) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4;ext=1\r\n{\"a\"\r\n3\r\n:12\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n")
    server = serve(answering(chunked, ok(b"{}")))
    client = transport(server)
    assert client.invoke("f", b"{}", {}, timeout=5).body == b'{"a":12}'
    assert client.invoke("f", b"{}", {}, timeout=5).body == b"{}"  # the stream stayed in step: reused
    assert server.connections == 1


def test_an_answer_framed_by_close_is_read_to_the_end_and_the_socket_is_not_reused(
        serve: Callable[..., Server]) -> None:
    def script(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        time.sleep(0.05)
        conn.sendall(b"it")

    server = serve(script)
    client = transport(server)
    assert client.invoke("f", b"{}", {}, timeout=5).body == b"all of it"
    assert client.invoke("f", b"{}", {}, timeout=5).body == b"all of it"
    assert server.connections == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",  # closed mid-body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",  # closed mid-chunk
    b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",  # bad status code
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",  # bad length
    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nabcdef",  # conflicting lengths (smuggling)
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
    b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n",  # a header line without a colon
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",  # not gzip
    b"",  # closed without a word
])
def test_a_broken_answer_is_a_final_connection_lost_and_the_post_is_sent_once(
        serve: Callable[..., Server], answer: bytes) -> None:
    def script(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(answer)

    server = serve(script)
    client = transport(server, retry=ConnectRetry(attempts=3, backoff=0.001))
    error = fails(lambda: client.invoke("f", b"{}", {}, timeout=5), "connection_lost")
    assert error.attempts == 1 and len(server.requests) == 1  # the function may have run: never again


def test_an_endless_header_is_refused_not_buffered(serve: Callable[..., Server]) -> None:
    def script(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Big: ")
        for _ in range(100):
            conn.sendall(b"a" * 4096)

    server = serve(script)
    error = fails(lambda: transport(server).invoke("f", b"{}", {}, timeout=5), "connection_lost")
    assert "longer than" in error.message


def test_a_server_trickling_bytes_cannot_hold_the_call_past_its_deadline(serve: Callable[..., Server]) -> None:
    def script(conn: socket.socket, server: Server) -> None:  # slowloris: one byte per 100 ms, for 20 s
        server.read_request(conn)
        for byte in (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 200):
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    server = serve(script)
    started = time.monotonic()
    fails(lambda: transport(server).invoke("f", b"{}", {}, timeout=0.5), "timeout")
    assert time.monotonic() - started < 5  # per-read timeouts would have let it run for 20 s


@pytest.mark.parametrize("answer", [
    ok(b"x" * 2000),  # declared too long: refused before the body is read
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n" + b"0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 2000,  # framed by the close
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(b"0" * 100000))
    + gzip.compress(b"0" * 100000),  # a small gzip that inflates past the limit
])
def test_an_answer_past_max_response_is_too_large(serve: Callable[..., Server], answer: bytes) -> None:
    server = serve(answering(answer))
    client = transport(server, max_response=1000)
    error = fails(lambda: client.invoke("f", b"{}", {}, timeout=5), "too_large")
    assert "1000" in error.message


def test_gzip_and_deflate_bodies_are_decoded(serve: Callable[..., Server]) -> None:
    import zlib

    packed = gzip.compress(b'{"z":1}')
    deflated = zlib.compress(b'{"d":2}')
    server = serve(answering(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed,
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(deflated) + deflated))
    client = transport(server, max_response=1000)
    assert client.invoke("f", b"{}", {}, timeout=5).body == b'{"z":1}'
    assert client.invoke("f", b"{}", {}, timeout=5).body == b'{"d":2}'


def test_interim_100_continue_is_skipped_and_repeated_headers_joined(serve: Callable[..., Server]) -> None:
    server = serve(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"{}", b"Vary: a\r\nVary: b\r\n")))
    reply = transport(server).invoke("f", b"{}", {}, timeout=5)
    assert reply.status == 200 and reply.headers["vary"] == "a, b"


def test_a_socket_the_server_closed_while_idle_is_never_used_for_the_next_post(
        serve: Callable[..., Server]) -> None:
    def script(conn: socket.socket, server: Server) -> None:  # gunicorn's keepalive: one answer, then close
        server.read_request(conn)
        conn.sendall(ok(b"{}"))
        conn.shutdown(socket.SHUT_RDWR)

    server = serve(script)
    client = transport(server, retry=ConnectRetry(attempts=0))
    assert client.invoke("f", b"1", {}, timeout=5).status == 200
    time.sleep(0.1)  # the FIN has arrived: the idle socket is dead
    assert client.invoke("f", b"2", {}, timeout=5).status == 200  # on a fresh socket, not a 502
    assert server.connections == 2 and [r[-1:] for r in server.requests] == [b"1", b"2"]  # each sent once


def test_stray_bytes_after_an_answer_retire_the_socket(serve: Callable[..., Server]) -> None:
    def script(conn: socket.socket, server: Server) -> None:
        while server.read_request(conn) is not None:
            conn.sendall(ok(b"{}") + b"HTTP/1.1 200 OK\r\n")  # an answer nobody asked for follows

    server = serve(script)
    client = transport(server)
    assert client.invoke("f", b"{}", {}, timeout=5).body == b"{}"
    assert client.invoke("f", b"{}", {}, timeout=5).body == b"{}"
    assert server.connections == 2


def test_a_header_carrying_crlf_is_refused_before_anything_is_sent(serve: Callable[..., Server]) -> None:
    server = serve(answering(ok(b"{}")))
    with pytest.raises(ValueError):
        transport(server).invoke("f", b"{}", {"X-Id": "a\r\nX-Injected: 1"}, timeout=5)
    assert server.requests == []


def test_caller_framing_headers_cannot_smuggle_a_second_request(serve: Callable[..., Server]) -> None:
    server = serve(answering(ok(b"{}")))
    transport(server).invoke("f", b"{}", {"Content-Length": "0", "Transfer-Encoding": "chunked"}, timeout=5)
    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert head.count(b"content-length") == 1 and b"content-length: 2" in head and b"transfer-encoding" not in head


def test_unix_socket_server_closing_mid_body_is_connection_lost(serve: Callable[..., Server], tmp_path: Path) -> None:
    def script(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{")

    server = serve(script, str(tmp_path / "s.sock"))
    client = open_transport(server.url)
    assert isinstance(client, UnixHttpTransport)
    fails(lambda: client.invoke("f", b"{}", {}, timeout=5), "connection_lost")
    assert server.requests[0].startswith(b"POST /function/f HTTP/1.1\r\nHost: localhost\r\n")


def test_a_port_nobody_listens_on_is_a_retried_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    client = HttpTransport(f"http://127.0.0.1:{port}", retry=ConnectRetry(attempts=2, backoff=0.01),
                           sleep=sleeps.append)
    error = fails(lambda: client.invoke("f", b"{}", {}, timeout=5), "connect")
    assert error.attempts == 3 and sleeps == [0.01, 0.02]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost/127.0.0.1 and its key, made here with ``cryptography``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_verifies_the_certificate_and_reuses_the_tls_socket(
        serve: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    plain = answering(ok(b'{"tls":1}'), ok(b'{"tls":2}'))

    def script(conn: socket.socket, server: Server) -> None:
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate
        plain(tls, server)

    server = serve(script)
    url = server.url.replace("http://127.0.0.1", "https://localhost") + "/#{name}"
    untrusted = open_transport(url, {}, retry=ConnectRetry(attempts=0))
    fails(lambda: untrusted.invoke("f", b"{}", {}, timeout=5), "connect")  # not a trusted certificate
    assert server.requests == []
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the default context now trusts it
    trusted = open_transport(url, {})
    assert trusted.invoke("f", b"{}", {}, timeout=5).body == b'{"tls":1}'
    assert trusted.invoke("f", b"{}", {}, timeout=5).body == b'{"tls":2}'
    assert server.connections == 2  # the refused handshake, then one TLS socket for both calls
