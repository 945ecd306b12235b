"""HTTP of async invocations: ``/async-function/<name>`` (submit), ``/system/async/...`` (status, dead letters).

The submit path checks exactly what ``/function/<name>`` checks, with the same code and in the same
order (credentials, 404 for an unknown function, the rate limit's 429, the body's 413/408), then
the callback URL, then stores the call; the 202 is sent only once the call is committed.

Reading a call: the admin, or the caller who submitted it with an API key (the same key id); anyone
else gets 404, as if the call did not exist. A call submitted without a key (an open function) can be
read by the admin only: the gateway cannot tell one anonymous caller from another.
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from hydro_serving.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from hydro_serving.gateway import auth
from hydro_serving.gateway.admission import admit
from hydro_serving.gateway.appkeys import ASYNC_KEY, GATEWAY_KEY
from hydro_serving.gateway.asyncq import CALL_ID_HEADER, CALLBACK_HEADER, MAX_CALLBACK_URL, AsyncQueue
from hydro_serving.gateway.asyncstore import FINAL
from hydro_serving.gateway.callers import caller_key_id
from hydro_serving.gateway.keys import looks_like_key
from hydro_serving.gateway.limits import body_limit, read_body
from hydro_serving.gateway.routes import require_admin

CALL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_LIST = 1000
PREFIX = "/async-function/"


def check_callback_url(value: str | None, allowed_hosts: frozenset[str]) -> str | None:
    """``X-Callback-Url``: absent, or an absolute http(s) URL (on the allow-list when there is one); else 400.

    Callbacks go where the caller says (as in OpenFaaS): from inside the gateway's network. An operator
    who does not want callers to reach internal addresses sets ``HYDRO_ASYNC_CALLBACK_HOSTS``.
    """
    if value is None:
        return None
    field = CALLBACK_HEADER
    if len(value) > MAX_CALLBACK_URL:
        raise BadRequest(f"{field} is longer than {MAX_CALLBACK_URL} characters", field=field)
    if not value.isascii() or not value.isprintable() or " " in value:
        raise BadRequest(f"{field} must be a printable ASCII URL without spaces", field=field)
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise BadRequest(f"{field} is not a valid URL: {exc}", field=field) from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"{field} must be an http:// or https:// URL, not {parts.scheme or 'a relative one'}:",
                         field=field)
    if not host:
        raise BadRequest(f"{field} has no host", field=field)
    if parts.username is not None or parts.password is not None:
        raise BadRequest(f"{field} must not carry credentials (user:password@)", field=field)
    if allowed_hosts and host.lower() not in allowed_hosts and \
            f"{host.lower()}:{parts.port}" not in allowed_hosts:
        raise BadRequest(f"{field} host '{host}' is not allowed by the gateway (HYDRO_ASYNC_CALLBACK_HOSTS)",
                         field=field)
    return value


async def submit(request: web.Request) -> web.Response:
    """``ANY /async-function/<name>[/<path>]``: checked as a sync call, stored, 202 with ``X-Call-Id``."""
    gw = request.app[GATEWAY_KEY]
    queue = request.app[ASYNC_KEY]
    name = request.match_info["name"]
    gw.check_caller(name, request.headers.getall("Authorization", []))
    pool = gw.pools.get(name)
    if pool is None:
        raise NotFound(f"function '{name}' is not deployed", function=name)
    limit_headers = admit(request, gw.rate_limiter, pool)
    callbacks = request.headers.getall(CALLBACK_HEADER, [])
    if len(callbacks) > 1:
        raise BadRequest(f"send one {CALLBACK_HEADER} header, not {len(callbacks)}", field=CALLBACK_HEADER)
    callback = check_callback_url(callbacks[0] if callbacks else None, queue.settings.callback_hosts)
    body = await read_body(request, name, body_limit(pool.spec, gw.config.max_body), gw.config.body_timeout)
    path = request.raw_path[len(PREFIX) + len(name):]
    call_id = queue.submit(name, request.method, path, request.headers, body, callback, caller_key_id(request))
    headers = {**limit_headers, CALL_ID_HEADER: call_id, "Location": f"/system/async/{call_id}"}
    return web.json_response({"callId": call_id, "function": name, "status": "queued"}, status=202,
                             headers=headers)


# ---- reading a call -------------------------------------------------------------------------------


def _call_id(request: web.Request) -> str:
    call_id = request.match_info["call_id"]
    if not CALL_ID.match(call_id):
        raise ValidationError(f"'{call_id[:60]}' is not a call id (a UUID as X-Call-Id gave it)", field="call-id")
    return call_id


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _body(raw: bytes | None) -> dict[str, Any]:
    raw = bytes(raw or b"")
    try:
        return {"body": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(raw).decode(), "bodyEncoding": "base64"}


def describe(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON of ``GET /system/async/<id>`` (and of ``hydro async show``)."""
    out: dict[str, Any] = {
        "callId": row["id"], "function": row["function"], "status": row["status"], "attempts": row["attempts"],
        "method": row["method"], "path": row["path"] or "/",
        "submittedAt": _iso(row["submitted_at"]), "lastAttemptAt": _iso(row["started_at"]),
        "finishedAt": _iso(row["finished_at"]),
        "nextAttemptAt": _iso(row["next_at"]) if row["status"] == "queued" else None,
        "expiresAt": _iso(row["expires_at"]), "error": row["error"],
    }
    if row["finished_at"] and row["started_at"]:
        out["durationSeconds"] = round(row["finished_at"] - row["started_at"], 6)
    if row["response_status"] is not None:
        out["response"] = {"status": row["response_status"],
                           "headers": dict(json.loads(row["response_headers"] or "[]")),
                           **_body(row["response_body"])}
    if row["callback"]:
        out["callback"] = {"url": row["callback"], "state": row["callback_state"],
                           "attempts": row["callback_attempts"], "status": row["callback_status"],
                           "error": row["callback_error"]}
    return out


def _may_read(request: web.Request, row: dict[str, Any] | None) -> bool:
    """Admin: any call; a key: the calls it submitted; 401 without credentials; else False (-> 404)."""
    gw = request.app[GATEWAY_KEY]
    credential = auth.presented(request.headers.getall("Authorization", []))
    if credential is None:
        raise Unauthorized("credentials required: the admin token, or the API key that submitted the call")
    if gw.credentials.matches(credential):
        return True
    if credential.scheme != "bearer" or not looks_like_key(credential.value):
        raise Unauthorized("invalid credentials: send the admin token or the API key that submitted the call")
    if row is None:
        return False
    try:
        key = gw.keys.authenticate(credential.value, row["function"])
    except Forbidden:  # a genuine key of other functions: not its call
        return False
    return row["key_id"] is not None and key.id == row["key_id"]


async def get_call(request: web.Request) -> web.Response:
    """``GET /system/async/<call-id>``: status, attempts, timings and the kept response."""
    call_id = _call_id(request)
    queue = request.app[ASYNC_KEY]
    assert queue.store is not None
    row = queue.store.get(call_id)
    if not _may_read(request, row) or row is None:
        raise NotFound(f"no async call {call_id} (or not yours)", field="call-id")
    return web.json_response(describe(row))


# ---- dead letters (admin) ----------------------------------------------------------------------------


def _queue(request: web.Request) -> AsyncQueue:
    queue = request.app[ASYNC_KEY]
    assert queue.store is not None
    return queue


def _status_param(request: web.Request, default: str | None, allowed: tuple[str, ...]) -> str | None:
    status = request.query.get("status")
    if status is None:
        return default
    if status not in allowed:
        raise ValidationError(f"status must be one of {', '.join(allowed)}, got '{status[:40]}'", field="status")
    return status


def _function_param(request: web.Request) -> str | None:
    from hydro_serving.stack.model import DNS_LABEL

    function = request.query.get("function")
    if function is not None and not DNS_LABEL.match(function):
        raise ValidationError(f"'{function[:80]}' is not a function name", field="function")
    return function


@require_admin
async def list_calls(request: web.Request) -> web.Response:
    """``GET /system/async?status=dead&function=f&limit=100``: newest first, without bodies."""
    status = _status_param(request, None, ("queued", "running", "succeeded", "failed", "dead"))
    raw_limit = request.query.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIST}", field="limit")
    rows = _queue(request).store.list(status, _function_param(request), int(raw_limit))  # type: ignore[union-attr]
    return web.json_response([{
        "callId": r["id"], "function": r["function"], "status": r["status"], "attempts": r["attempts"],
        "submittedAt": _iso(r["submitted_at"]), "finishedAt": _iso(r["finished_at"]),
        "responseStatus": r["response_status"], "error": r["error"], "callback": r["callback_state"],
    } for r in rows])


@require_admin
async def redrive_call(request: web.Request) -> web.Response:
    """``POST /system/async/<id>/redrive``: a dead (or failed) call runs again from attempt 1."""
    call_id = _call_id(request)
    queue = _queue(request)
    assert queue.store is not None
    calls = queue.store.redrive([call_id], None, time.time())
    if not calls:
        row = queue.store.get(call_id)
        if row is None:
            raise NotFound(f"no async call {call_id}", field="call-id")
        raise Conflict(f"async call {call_id} is {row['status']}; only dead or failed calls are redriven",
                       field="call-id")
    queue.redriven(calls)
    return web.json_response({"redriven": 1, "callIds": [call_id]}, status=202)


@require_admin
async def redrive_all(request: web.Request) -> web.Response:
    """``POST /system/async/dead/redrive[?function=f]``: every dead call (of one function) runs again.

    Not ``/system/async/redrive``: that would also match ``/system/async/{call_id}`` (GET, DELETE).
    """
    queue = _queue(request)
    assert queue.store is not None
    calls = queue.store.redrive(None, _function_param(request), time.time())
    queue.redriven(calls)
    return web.json_response({"redriven": len(calls), "callIds": [c[0] for c in calls]}, status=202)


@require_admin
async def purge_call(request: web.Request) -> web.Response:
    """``DELETE /system/async/<id>``: forget one finished call (409 while it is queued or running)."""
    call_id = _call_id(request)
    queue = _queue(request)
    assert queue.store is not None
    if not queue.store.purge(call_id, None, None):
        row = queue.store.get(call_id)
        if row is None:
            raise NotFound(f"no async call {call_id}", field="call-id")
        raise Conflict(f"async call {call_id} is {row['status']} (callback {row['callback_state']}); only a "
                       "finished call is purged", field="call-id")
    return web.json_response({"purged": 1})


@require_admin
async def purge_calls(request: web.Request) -> web.Response:
    """``DELETE /system/async?status=dead[&function=f]``: forget every finished call of that status."""
    status = _status_param(request, "dead", FINAL)
    purged = _queue(request).store.purge(None, status, _function_param(request))  # type: ignore[union-attr]
    return web.json_response({"purged": purged})


ASYNC_ROUTES: list[tuple[str, str, Any]] = [
    ("*", "/async-function/{name}", submit),
    ("*", "/async-function/{name}/{path:.*}", submit),
    ("GET", "/system/async", list_calls),
    ("DELETE", "/system/async", purge_calls),
    ("POST", "/system/async/dead/redrive", redrive_all),
    ("GET", "/system/async/{call_id}", get_call),
    ("DELETE", "/system/async/{call_id}", purge_call),
    ("POST", "/system/async/{call_id}/redrive", redrive_call),
]


def openapi_paths() -> dict[str, Any]:
    """The async queue's part of the gateway's OpenAPI document (``/openapi.json``)."""
    error = {"$ref": "#/components/responses/Error"}
    admin = [{"bearer": []}, {"basic": []}]
    name = {"name": "name", "in": "path", "required": True, "description": "the function",
            "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "maxLength": 63}}
    rest = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "the rest of the path, forwarded to the function"}
    call_id = {"name": "call_id", "in": "path", "required": True, "description": "X-Call-Id of the submit",
               "schema": {"type": "string", "pattern": CALL_ID.pattern}}
    function_q = {"name": "function", "in": "query", "required": False,
                  "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}}

    def ok(status: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {status: {"description": "OK", "content": {"application/json": {"schema": schema}}}}

    accepted = {"202": {"description": "stored; runs later", "headers": {
        "X-Call-Id": {"schema": {"type": "string"}, "required": True}, "Location": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"type": "object", "required": ["callId"], "properties": {
            "callId": {"type": "string"}, "function": {"type": "string"}, "status": {"type": "string"}}}}}}}

    def submit_item(params: list[dict[str, Any]]) -> dict[str, Any]:
        item = {}
        for method in ("get", "post", "put", "patch", "delete"):
            op: dict[str, Any] = {
                "summary": "Submit an async call: stored durably, 202 with X-Call-Id; the result is POSTed to "
                           "X-Callback-Url. Checked as /function/<name> (auth, 404, 429, 413)",
                "tags": ["async"], "security": [{}, {"bearer": []}, {"basic": []}],
                "parameters": [*params, {"name": "X-Callback-Url", "in": "header", "required": False,
                                         "schema": {"type": "string", "format": "uri"}}],
                "responses": {**accepted, **{s: error for s in ("400", "401", "403", "404", "408", "413", "429",
                                                                  "507")}}}
            if method in ("post", "put", "patch"):
                op["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
            item[method] = op
        return item

    def admin_op(summary: str, responses: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
        return {"summary": summary, "tags": ["async"], "security": admin, "parameters": params,
                "responses": {**responses, "400": error, "401": error, "404": error}}

    status_q = {"name": "status", "in": "query", "required": False,
                "schema": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "dead"]}}
    final_q = {**status_q, "schema": {"type": "string", "enum": list(FINAL)}}
    limit_q = {"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST}}
    redriven = ok("202", {"type": "object", "properties": {"redriven": {"type": "integer"},
                                                           "callIds": {"type": "array", "items": {"type": "string"}}}})
    purged = ok("200", {"type": "object", "properties": {"purged": {"type": "integer"}}})
    return {
        "/async-function/{name}": submit_item([name]),
        "/async-function/{name}/{path}": submit_item([name, rest]),
        "/system/async": {
            "get": admin_op("List async calls, newest first (status=dead: the dead-letter queue)",
                            ok("200", {"type": "array", "items": {"type": "object"}}), [status_q, function_q, limit_q]),
            "delete": admin_op("Purge every finished call of a status (default dead)", purged, [final_q, function_q]),
        },
        "/system/async/dead/redrive": {"post": admin_op("Redrive every dead call (of one function)", redriven,
                                                   [function_q])},
        "/system/async/{call_id}": {
            "get": {**admin_op("One call: status, attempts, timings, the kept response; the admin or the API key "
                               "that submitted it", ok("200", {"type": "object"}), [call_id]),
                    "security": [{"bearer": []}, {"basic": []}]},
            "delete": admin_op("Purge one finished call", {**purged, "409": error}, [call_id]),
        },
        "/system/async/{call_id}/redrive": {"post": admin_op("Run a dead or failed call again", {**redriven,
                                                                                                "409": error},
                                                             [call_id])},
    }
