"""Forwarding one request to a replica: headers minus hop-by-hop, body as bytes, nothing parsed.

Kept apart from routing so the hot path is easy to read and to measure: one pooled session, no
JSON decoding of bodies, a header filter over a frozenset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})


def new_session() -> aiohttp.ClientSession:
    """The gateway's one client session: keep-alive pooling to replicas, bodies passed through as they are.

    No cookie jar (cookies of one caller must never reach another), no automatic decompression
    (a gzip body stays gzip with its Content-Encoding), no default headers the caller did not send.
    """
    # idle connections closed after 15 s, before the runtime's 30 s: never reuse one the replica is closing
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=15, ttl_dns_cache=None)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                                 skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"))


def forward_headers(request: web.Request, drop_auth: bool) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or (drop_auth and lower == "authorization"):
            continue
        headers.add(key, value)
    peer = request.remote
    if peer:
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    return headers


_ROOTS: dict[str, URL] = {}  # endpoint -> its "/" URL: most calls are POST /function/<name>, built once


def upstream_url(endpoint: str, raw_path: str, prefix_len: int) -> URL:
    """The replica URL for ``/function/<name><rest>``: ``rest`` (path and query) kept exactly as sent."""
    rest = raw_path[prefix_len:]
    if not rest:
        root = _ROOTS.get(endpoint)
        if root is None:
            if len(_ROOTS) > 4096:  # bounded: replicas come and go (ports, sockets share "http://localhost")
                _ROOTS.clear()
            root = _ROOTS[endpoint] = URL(endpoint + "/", encoded=True)
        return root
    if rest[0] == "?":
        rest = "/" + rest
    return URL(endpoint + rest, encoded=True)


def upstream_target(raw_path: str, prefix_len: int) -> str:
    """The request target on the replica for ``/function/<name><rest>``: ``rest`` (path and query) as sent."""
    rest = raw_path[prefix_len:]
    if not rest:
        return "/"
    return "/" + rest if rest[0] == "?" else rest


def response_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    """A replica's answer headers minus the hop-by-hop ones (the gateway frames its own answer)."""
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in upstream.items():
        if key.lower() not in HOP_BY_HOP:
            headers.add(key, value)
    return headers


LOADING_HEADER = "X-Hydro-Ready"  # "false" on a runtime's readiness 503 (when the runtime sends it)
MAX_LOADING_BODY = 4096


def replica_is_loading(headers: Mapping[str, str], body: bytes, function: str) -> bool:
    """True when a 503 is the runtime's readiness gate ("function 'x' is loading"), not the handler's.

    Such a request never reached the handler, so the gateway may retry it once the replica is
    ready. Recognised by the ``X-Hydro-Ready: false`` header, else by the runtime's error body
    ``{"code": "unavailable", "function": <this function>, "details": {"status": "loading"}}``
    (a router relaying a stage's 503 names the stage in ``details``, never this shape).
    """
    if headers.get(LOADING_HEADER, "").lower() == "false":
        return True
    if len(body) > MAX_LOADING_BODY or not body.lstrip().startswith(b"{"):
        return False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return (isinstance(data, dict) and data.get("code") == "unavailable" and data.get("function") == function
            and data.get("details") == {"status": "loading"})
