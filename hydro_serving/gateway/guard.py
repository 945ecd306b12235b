"""Hostile requests stopped at the door with a 4xx naming what is wrong, before any handler runs.

Each rule answers something seen to give a 500 or to slip through (issue 12):

* a function name in the path that is not literally a DNS label (``/function/%65cho``, 300 characters,
  uppercase): 400 naming ``name`` — the raw path is what the replica URL is built from, so a name
  that differs once percent-decoded must never reach the forwarding code;
* more than one ``Authorization`` header, or one with non-ASCII or control characters: 400 naming
  ``Authorization`` (which credentials would count is ambiguous; and secrets are ASCII);
* an admin JSON body with a content type that is not JSON: 415 naming ``Content-Type``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hydro_serving.errors import BadRequest, UnsupportedMediaType
from hydro_serving.stack.model import DNS_LABEL

NAMED_PREFIXES = ("/function/", "/async-function/", "/system/function/", "/system/scale-function/")


def _check_authorization(request: web.Request) -> None:
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:
        raise BadRequest("send one Authorization header, not several", field="Authorization")
    if values and not all(" " <= ch <= "~" for ch in values[0]):
        raise BadRequest("the Authorization header must be printable ASCII", field="Authorization")


def _check_name(request: web.Request) -> None:
    raw = request.raw_path
    for prefix in NAMED_PREFIXES:
        if raw.startswith(prefix):
            name = raw[len(prefix):].split("?", 1)[0].split("/", 1)[0]
            if not DNS_LABEL.match(name):
                raise BadRequest(f"'{name[:80]}' is not a function name: lowercase letters, digits and '-', "
                                 "at most 63, written as is (not percent-encoded)", field="name")
            return


def check_json_content_type(request: web.Request) -> None:
    """Admin bodies are JSON: no content type (curl's habit) or a JSON one; else 415."""
    mimetype = request.content_type if "Content-Type" in request.headers else ""
    if mimetype in ("", "application/json") or (mimetype.startswith("application/") and mimetype.endswith("+json")):
        return
    raise UnsupportedMediaType(f"Content-Type {mimetype} is not supported here; send application/json",
                               field="Content-Type")


@web.middleware
async def guard_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Runs inside the error middleware, so its refusals are ordinary JSON errors."""
    _check_authorization(request)
    _check_name(request)
    return await handler(request)
