"""``X-Request-Id``: one id per request, taken from the caller when sane, else generated.

The id is returned on every response (an ``on_response_prepare`` hook, so streamed and error responses
carry it too), passed to the replica, and written in the gateway's log line of every failure, so a
caller quoting it finds the cause that its 5xx body deliberately leaves out.
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web

REQUEST_ID_HEADER = "X-Request-Id"
_SANE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")  # anything else (huge, binary, CRLF) is replaced
_KEY: web.RequestKey[str] = web.RequestKey("hydro.request_id", str)


def request_id(request: web.Request) -> str:
    """This request's id (decided once, then cached on the request)."""
    rid = request.get(_KEY)
    if rid is None:
        sent = request.headers.get(REQUEST_ID_HEADER, "")
        rid = sent if _SANE.match(sent) else uuid.uuid4().hex
        request[_KEY] = rid
    return rid


def set_request_id(request: web.Request, rid: str) -> None:
    """Fix this request's id (the monitor's tap decides it for invocations: one id for log, body and samples)."""
    request[_KEY] = rid if _SANE.match(rid) else uuid.uuid4().hex


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response names its request."""
    response.headers[REQUEST_ID_HEADER] = request_id(request)
