"""Request bodies in, response bodies out: JSON parsing with clear errors, and result rendering.

Kept apart from the Flask routes so that the rules (what is a JSON request, what a handler may
return) are plain functions that read the same wherever they are used.
"""

from __future__ import annotations

import json
from typing import Any

from hydro_serving.errors import BadRequest, HandlerError, UnsupportedMediaType
from hydro_serving.jsondepth import check_json_depth
from hydro_serving.sdk.context import RawResponse


def is_json_mimetype(mimetype: str) -> bool:
    """``application/json``, ``application/*+json``, or no content type at all (curl's habit)."""
    return mimetype in ("", "application/json") or (mimetype.startswith("application/") and mimetype.endswith("+json"))


FORM_MIMETYPE = "application/x-www-form-urlencoded"


def json_in_form(body: bytes, mimetype: str) -> bool:
    """Is this curl's ``-d '{...}'``: a body labelled form-encoded (curl's default) that is a JSON document?

    OpenFaaS users call functions with plain ``curl -d``; such a body is taken as the JSON it is
    (issue 14). A real form (``a=1&b=2``) never starts with ``{`` or ``[``, so it is not mistaken.
    """
    if mimetype != FORM_MIMETYPE:
        return False
    head = body.lstrip()[:1]
    if head not in (b"{", b"["):
        return False
    try:
        parse_json(body)
    except BadRequest:
        return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; 400 naming the line and column of a syntax error."""
    if not body.strip():
        raise BadRequest("the request body is empty; send a JSON document", field="$")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 (byte {exc.start}); send UTF-8 JSON", field="$") from None
    check_json_depth(body)  # issue 12: a 400 naming the limit, not a RecursionError
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", field="$") from None
    except ValueError as exc:
        raise BadRequest(f"invalid JSON: {exc}", field="$") from None


def parse_invoke_body(body: bytes, mimetype: str, accepts_raw: bool) -> Any:
    """The payload handed to a handler.

    Models take JSON only (415 otherwise, naming the header). Custom functions and routers also
    take other bodies, like OpenFaaS's python3-http: ``text/*`` as ``str``, anything else as
    ``bytes``, and an empty body as ``None`` (a GET).
    """
    if is_json_mimetype(mimetype) or json_in_form(body, mimetype):
        if accepts_raw and not body:
            return None
        return parse_json(body)
    if not accepts_raw:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype} is not supported; send JSON with Content-Type: application/json"
            + (" (the body is not a JSON document)" if mimetype == FORM_MIMETYPE else ""),
            field="Content-Type")
    if mimetype.startswith("text/"):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("a text/* body must be UTF-8", field="$") from None
    return body


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays (what models return) become plain JSON values."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"a {type(value).__name__} is not JSON-serialisable")


def dump_json(value: Any, function: str) -> bytes:
    """JSON bytes of a handler's result; an unserialisable result is the function's fault (500)."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":")).encode()
    except TypeError as exc:
        raise HandlerError(f"function '{function}' returned a value that is not JSON: {exc}",
                           function=function) from None
    except ValueError:
        raise HandlerError(f"function '{function}' returned NaN or Infinity, which JSON cannot carry",
                           function=function) from None


def render_result(result: Any, function: str) -> tuple[bytes, int, str, dict[str, str]]:
    """``(body, status, content_type, headers)`` for what a handler returned."""
    if isinstance(result, RawResponse):
        return bytes(result.body), result.status, result.content_type, dict(result.headers)
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result), 200, "application/octet-stream", {}
    if isinstance(result, str):
        return result.encode("utf-8"), 200, "text/plain; charset=utf-8", {}
    return dump_json(result, function), 200, "application/json", {}
