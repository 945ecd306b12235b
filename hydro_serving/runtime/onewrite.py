"""A replica's answers leave in one write: head and body together, as one TCP segment.

Why: gunicorn writes a response's head, then its body, with one ``sendall`` each. For a small JSON
answer (an iris prediction, a pipeline's result) that is two segments on the loopback, and the
caller - the gateway, or a router calling a stage - wakes up for the head, parses it, and waits
again for the body: a second read and a second wake-up per request on both sides. Profiling the
router (issue 18 point 3) showed its stage reads waiting on that second segment. When the whole
body is in hand with the head (a declared ``Content-Length`` equal to the body, one body item, not
chunked, a status and method that carry a body), this response sends both with one ``sendall``;
anything else is gunicorn's own ``write``, unchanged.

:func:`install` makes gunicorn's ``wsgi.create`` build this class in the worker it is called in
(``gunicorn.http.wsgi.create`` looks ``Response`` up at each call); the runtime server calls it
after each fork, so nothing changes at import time nor in any other process.
"""

from __future__ import annotations

from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

_NO_BODY_STATUSES = frozenset((204, 304))


class OneWriteResponse(wsgi.Response):
    """gunicorn's Response, writing head + body with one ``sendall`` when the body is the whole answer."""

    def write(self, arg: Any) -> None:
        if (not self.headers_sent and isinstance(arg, bytes) and arg and not self.chunked
                and self.response_length == len(arg) and self._carries_body()):
            head = self.default_headers()
            head.extend([f"{k}: {v}\r\n" for k, v in self.headers])
            util.write(self.sock, util.to_bytestring("".join(head) + "\r\n", "latin-1") + arg)
            self.headers_sent = True
            self.sent += len(arg)
            return
        super().write(arg)

    def _carries_body(self) -> bool:
        """A body goes on the wire (not HEAD, not 1xx/204/304): else gunicorn's own rules apply."""
        code = getattr(self, "status_code", None)
        return (self.req.method != "HEAD" and code is not None and code >= 200
                and code not in _NO_BODY_STATUSES and not getattr(self, "_omits_body", False))


def install() -> None:
    """In this (worker) process, gunicorn builds :class:`OneWriteResponse` for every request."""
    wsgi.Response = OneWriteResponse  # type: ignore[misc]
