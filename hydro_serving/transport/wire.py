"""A small HTTP/1.1 client for one POST at a time over pooled keep-alive sockets: the transports' wire.

Why not urllib3: profiling the router under load (issue 18 point 3) put a quarter of its CPU in
urllib3 and http.client around each stage call - header objects, the email parser for the answer's
headers, ``Timeout`` objects, ``putheader`` per header, a poll before every reuse. A stage call is
always the same shape (one POST with a byte body, one answer read whole), so this module does only
that: one ``sendall`` of head and body, a parser for the status line and headers, and bodies framed
by ``Content-Length``, ``chunked`` or the connection's close (``gzip``/``deflate`` decoded, as urllib3
did). It keeps every rule of :class:`~hydro_serving.transport.base.Transport`:

* a failure to *connect* (refused, unreachable, a missing unix socket, the connect timed out) is
  :class:`ConnectFailed`: nothing was sent, the caller may retry;
* anything after the first byte was sent is final: :class:`WireTimeout` when the deadline passed
  (the *whole* call is bounded, so a server trickling one byte at a time cannot hold it longer),
  :class:`WireError` for a lost connection or an answer that is not HTTP, :class:`TooLarge` past
  ``limit`` bytes;
* an idle kept-alive socket is checked before reuse without blocking (``MSG_PEEK``): one the server
  closed while idle is dropped and a fresh one opened, so a POST is never sent on a socket already
  known dead, and never sent twice.

A :class:`Pool` holds the idle sockets of one address, last in first out, at most ``size`` of them;
a burst beyond that opens extra sockets, closed after use (urllib3's ``block=False``).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping

MAX_HEAD = 65536  # bytes of status line + headers (http.client's line limit)
MAX_HEADERS = 100  # header lines (http.client's limit)
RECV = 65536
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_NO_BODY = frozenset((204, 304))
_DROPPED_REQUEST_HEADERS = frozenset(("content-length", "transfer-encoding", "connection", "host"))


class WireError(Exception):
    """The connection was lost, or the answer was not HTTP: final (the server may have run the call)."""


class ConnectFailed(WireError):
    """The connection never opened: nothing was sent, so a retry cannot run the call twice."""


class WireTimeout(WireError):
    """The deadline passed after the request was (maybe partly) sent: final."""


class TooLarge(WireError):
    """The answer is longer than the caller's limit (``length`` when the server declared it, else None)."""

    def __init__(self, length: int | None) -> None:
        super().__init__(f"declared {length} bytes" if length is not None else "more bytes than allowed")
        self.length = length


class Answer:
    """A status, lower-case headers and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Address:
    """Where to connect: ``("tcp", (host, port))`` or ``("unix", path)``; TLS when ``tls`` is set."""

    __slots__ = ("host_header", "kind", "server_hostname", "tls", "where")

    def __init__(self, kind: str, where: tuple[str, int] | str, host_header: str,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None) -> None:
        self.kind = kind
        self.where = where
        self.host_header = host_header
        self.tls = tls
        self.server_hostname = server_hostname

    def connect(self, timeout: float) -> socket.socket:
        """A connected socket, or :class:`ConnectFailed` (any OSError here means nothing was sent)."""
        try:
            if self.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect(self.where)  # type: ignore[arg-type]
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(self.where, timeout=timeout)  # type: ignore[arg-type]
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:  # TLS sockets stay in timeout mode (set per call)
                try:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.server_hostname)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock.settimeout(0.0)  # non-blocking: calls wait with poll() only when they must
        except TimeoutError:
            raise ConnectFailed(f"connect timed out after {timeout:.3g}s") from None
        except OSError as exc:
            raise ConnectFailed(exc.strerror or str(exc) or type(exc).__name__) from None
        return sock


class Pool:
    """Idle keep-alive sockets to one :class:`Address`; thread-safe (deque append/pop are atomic)."""

    def __init__(self, address: Address, size: int) -> None:
        self.address = address
        self.size = size
        self.opened = 0  # sockets opened so far (tests read it to see reuse)
        self._idle: deque[socket.socket] = deque()

    def _take(self) -> socket.socket | None:
        """An idle socket the server has not closed, or None."""
        while True:
            try:
                sock = self._idle.pop()
            except IndexError:
                return None
            if _alive(sock):
                return sock
            sock.close()

    def _give(self, sock: socket.socket) -> None:
        if len(self._idle) < self.size:
            self._idle.append(sock)
        else:
            sock.close()

    def post(self, path: str, body: bytes, headers: Mapping[str, str], deadline: float, connect_timeout: float,
             limit: int | None) -> Answer:
        """POST ``body`` and read the whole answer by ``deadline`` (a ``time.monotonic()`` instant)."""
        head = _head(path, self.address.host_header, headers, len(body))
        sock = self._take()
        if sock is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireTimeout("no time left to connect")
            sock = self.address.connect(min(connect_timeout, left))
            self.opened += 1
        reusable = False
        try:
            _send(sock, head, body, deadline)
            answer, reusable = _read_answer(sock, deadline, limit)
        except TimeoutError:
            raise WireTimeout("read timed out") from None
        except ssl.SSLError as exc:
            raise WireError(f"TLS error: {exc.reason or exc}") from None
        except OSError as exc:
            raise WireError(exc.strerror or str(exc) or type(exc).__name__) from None
        finally:
            if reusable:
                self._give(sock)
            else:
                sock.close()
        return answer

    def close(self) -> None:
        while True:
            try:
                self._idle.pop().close()
            except IndexError:
                return


def _alive(sock: socket.socket) -> bool:
    """Has the server left this idle socket alone (no EOF, no stray bytes)? Never blocks."""
    if isinstance(sock, ssl.SSLSocket):  # recv flags are refused on TLS sockets: poll the raw descriptor
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable and sock.pending() == 0
    try:
        sock.recv(1, _PEEK)  # returns at once: b"" (closed) or a byte the server sent unasked
    except BlockingIOError:  # nothing to read: the socket is idle and open
        return True
    except OSError:
        return False
    return False


def _head(path: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    for name, value in headers.items():
        if name.lower() in _DROPPED_REQUEST_HEADERS:  # framing is this client's; a caller cannot smuggle it
            continue
        lines.append(f"{name}: {value}")
    text = "\r\n".join(lines) + "\r\n\r\n"
    # a CR, LF or NUL inside a name or value would split the head: refuse it, as http.client does
    count = len(lines) + 1
    if text.count("\n") != count or text.count("\r") != count or "\0" in text:
        raise ValueError("a header name or value contains CR, LF or NUL")
    return text.encode("latin-1")


def _send(sock: socket.socket, head: bytes, body: bytes, deadline: float) -> None:
    if len(body) <= 65536:
        _sendall(sock, head + body, deadline)  # one segment, one syscall
    else:
        _sendall(sock, head, deadline)
        _sendall(sock, body, deadline)


def _wait(sock: socket.socket, writing: bool, deadline: float) -> None:
    """Until the socket can be written (or read), or TimeoutError at the deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    poller = select.poll()
    poller.register(sock, select.POLLOUT if writing else select.POLLIN)
    if not poller.poll(left * 1000 + 1):
        raise TimeoutError


def _sendall(sock: socket.socket, data: bytes, deadline: float) -> None:
    if sock.gettimeout() != 0.0:  # TLS: blocking with a timeout per call
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        sock.sendall(data)
        return
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            _wait(sock, True, deadline)
            continue
        view = view[sent:]


def _recv(sock: socket.socket, deadline: float) -> bytes:
    if sock.gettimeout() != 0.0:  # TLS
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        return sock.recv(RECV)
    while True:
        try:  # optimistic: the answer is often there already (no poll when it is)
            return sock.recv(RECV)
        except BlockingIOError:
            _wait(sock, False, deadline)


class _Reader:
    """Buffered reads from one socket, each bounded by what is left of the deadline."""

    __slots__ = ("buf", "deadline", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.deadline = deadline

    def more(self) -> bool:
        """Read once more into the buffer; False at EOF."""
        data = _recv(self.sock, self.deadline)
        if not data:
            return False
        self.buf += data
        return True

    def until(self, marker: bytes, limit: int, what: str) -> bytes:
        """Bytes up to ``marker`` (consumed, not returned); WireError past ``limit`` or at EOF."""
        start = 0
        while True:
            at = self.buf.find(marker, start)
            if at >= 0:
                out = bytes(self.buf[:at])
                del self.buf[:at + len(marker)]
                return out
            if len(self.buf) > limit:
                raise WireError(f"{what} longer than {limit} bytes")
            start = max(0, len(self.buf) - len(marker) + 1)
            if not self.more():
                raise WireError(f"the connection closed in the {what}" if self.buf or what != "status line"
                                else "the server closed the connection without answering")

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.more():
                raise WireError(f"the connection closed {n - len(self.buf)} bytes before the end of the body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def _read_answer(sock: socket.socket, deadline: float, limit: int | None) -> tuple[Answer, bool]:
    """(answer, socket reusable)."""
    reader = _Reader(sock, deadline)
    while True:
        status, version, headers = _read_head(reader)
        if status >= 200 or status == 101:
            break  # 100 Continue, 102, 103: interim answers, the real one follows
    if status == 101:
        raise WireError("the server switched protocols (101) on a POST")
    connection = headers.get("connection", "").lower()
    keep = ("close" not in connection) if version == "HTTP/1.1" else ("keep-alive" in connection)
    encoding = headers.get("transfer-encoding")
    if status in _NO_BODY:
        body = b""
    elif encoding is not None:
        if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
            raise WireError(f"unsupported Transfer-Encoding {encoding!r}")
        body = _chunked(reader, limit)
    elif "content-length" in headers:
        length = _content_length(headers["content-length"])
        if limit is not None and length > limit:
            raise TooLarge(length)
        body = reader.exactly(length)
    else:  # framed by the close: read to EOF, and the socket is spent
        keep = False
        while limit is None or len(reader.buf) <= limit:
            if not reader.more():
                break
        else:
            raise TooLarge(None)
        body = bytes(reader.buf)
        reader.buf.clear()
    if reader.buf:  # bytes beyond the answer: the stream is out of step, never reuse it
        keep = False
    coding = headers.get("content-encoding")
    if coding is not None and body:
        body = _decode(body, coding.strip().lower(), limit)
    return Answer(status, headers, body), keep


def _read_head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    raw = reader.until(b"\r\n\r\n", MAX_HEAD, "status line" if not reader.buf else "headers")
    lines = raw.split(b"\r\n")
    try:
        first = lines[0].decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise WireError("bad status line") from None
    parts = first.split(" ", 2)
    version = parts[0]
    if len(parts) < 2 or version not in ("HTTP/1.1", "HTTP/1.0") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise WireError(f"bad status line {first[:80]!r}")
    status = int(parts[1])
    if status < 100:
        raise WireError(f"bad status line {first[:80]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise WireError(f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b"\n" in line or b"\r" in line:
            raise WireError(f"bad header line {line[:80]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        old = headers.get(key)
        headers[key] = text if old is None else f"{old}, {text}"  # repeated headers joined, as urllib3 does
    return status, version, headers


def _content_length(value: str) -> int:
    values = {v.strip() for v in value.split(",")}  # "5, 5" (a repeated header) is one length
    if len(values) != 1:
        raise WireError(f"conflicting Content-Length {value!r}")
    text = values.pop()
    if not text.isdigit() or not text.isascii():
        raise WireError(f"bad Content-Length {value!r}")
    return int(text)


def _chunked(reader: _Reader, limit: int | None) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = reader.until(b"\r\n", 1024, "chunk size")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise WireError(f"bad chunk size {size_text[:40]!r}") from None
        if size < 0 or not size_text.isalnum():
            raise WireError(f"bad chunk size {size_text[:40]!r}")
        if size == 0:
            break
        total += size
        if limit is not None and total > limit:
            raise TooLarge(None)
        parts.append(reader.exactly(size))
        if reader.exactly(2) != b"\r\n":
            raise WireError("a chunk does not end with CRLF")
    while reader.until(b"\r\n", MAX_HEAD, "trailers"):  # trailers, ignored, up to the empty line
        pass
    return b"".join(parts)


def _decode(body: bytes, coding: str, limit: int | None) -> bytes:
    """gzip / deflate bodies decoded (urllib3's ``decode_content``), never past ``limit`` decoded bytes."""
    if coding in ("identity", ""):
        return body
    if coding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif coding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        return body  # an encoding we do not know is passed through, as urllib3 does
    cap = 0 if limit is None else limit + 1
    try:
        decoder = zlib.decompressobj(wbits)
        out = decoder.decompress(body, cap)
        if limit is not None and (len(out) > limit or decoder.unconsumed_tail):
            raise TooLarge(None)
        out += decoder.flush()
    except zlib.error:
        if coding != "deflate":
            raise WireError(f"the {coding} body could not be decoded") from None
        try:  # a raw deflate stream without the zlib header, which some servers send
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            out = decoder.decompress(body, cap) + decoder.flush()
        except zlib.error:
            raise WireError("the deflate body could not be decoded") from None
    if limit is not None and len(out) > limit:
        raise TooLarge(None)
    return out
