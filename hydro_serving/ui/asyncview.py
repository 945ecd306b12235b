"""The Async screen: queued, running, finished and dead async calls per function, redrive and purge.

Why reads in process but actions over HTTP: the page reads the async queue's store (the same rows
``GET /system/async`` lists, and a call's JSON built by the API's own :func:`describe`), which is cheap
enough to refresh every couple of seconds; but every change (redrive one, redrive a function's dead
letters, purge one, purge a status) is a request to the gateway's own ``/system/async`` routes with
the admin token, exactly what ``hydro async redrive|purge`` sends, so the store's rules (only dead or
failed calls are redriven, never a live call purged, 404/409 with the field) are the API's and are
shown inline. Each action asks for confirmation first (a page with a ``confirm=yes`` form).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

import hydro_serving.ui.data as data
from hydro_serving.errors import HydroError, NotFound, ServiceUnavailable, ValidationError
from hydro_serving.gateway.appkeys import ASYNC_KEY
from hydro_serving.gateway.asyncroutes import CALL_ID, describe
from hydro_serving.gateway.core import Gateway
from hydro_serving.stack.model import DNS_LABEL
from hydro_serving.ui.session import Session
from hydro_serving.ui.views import UI_KEY, action, page, render

SHOWN = ("queued", "running", "succeeded", "failed", "dead")  # the columns of the counts table
RECENT = 50  # calls listed on the page
PURGEABLE = ("dead", "failed", "succeeded")


def _store(request: web.Request) -> Any:
    queue = request.app.get(ASYNC_KEY)
    if queue is None or queue.store is None:
        raise ServiceUnavailable("the async queue is not running (the gateway is starting or stopping)")
    return queue.store


def counts(store: Any) -> list[dict[str, Any]]:
    """One row per function with async calls, by name: how many are in each state."""
    table: dict[str, dict[str, Any]] = {}
    for function, status, n in store.counts():
        if status in SHOWN:
            table.setdefault(function, {"function": function, **dict.fromkeys(SHOWN, 0)})[status] = n
    return [table[name] for name in sorted(table)]


def _age(ts: float | None, now: float) -> str:
    if not ts:
        return data.NONE
    seconds = max(0.0, now - ts)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def recent(store: Any, status: str | None, function: str | None, limit: int = RECENT) -> list[dict[str, Any]]:
    """The newest calls (without bodies): status, attempts, submitted, how long until they ended."""
    now = time.time()
    out = []
    for r in store.list(status, function, limit):
        took = (r["finished_at"] - r["submitted_at"]) * 1000 if r["finished_at"] else None
        out.append({"id": r["id"], "function": r["function"], "status": r["status"], "attempts": r["attempts"],
                    "submitted": _age(r["submitted_at"], now), "took": data.NONE if took is None else f"{took:.0f} ms",
                    "http": r["response_status"] or data.NONE, "error": r["error"] or ""})
    return out


def _filters(request: web.Request) -> tuple[str | None, str | None]:
    status = request.query.get("status") or None
    function = request.query.get("function") or None
    if status is not None and status not in SHOWN:
        raise ValidationError(f"status must be one of {', '.join(SHOWN)}", field="status")
    if function is not None and not DNS_LABEL.match(function):
        raise ValidationError(f"'{function[:80]}' is not a function name", field="function")
    return status, function


async def _admin(gw: Gateway, method: str, path: str) -> dict[str, Any]:
    """One request to the gateway's own admin API (what the CLI sends); a refusal raises its HydroError."""
    assert gw.session is not None
    headers = {"Authorization": f"Bearer {gw.credentials.token}"}
    try:
        async with gw.session.request(method, gw.config.url + path, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=30)) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ServiceUnavailable(f"the gateway did not answer: {type(exc).__name__}") from None
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"error": raw[:300].decode(errors="replace")}
    if status >= 400:
        raise HydroError(str(body.get("error", f"status {status}")), field=body.get("field"), status=status)
    return body


# ---- pages ----------------------------------------------------------------------------------------


async def _overview(request: web.Request, session: Session, status_code: int = 200, **extra: Any) -> web.Response:
    status, function = _filters(request)
    store = _store(request)
    return render(request, "async.html", status=status_code, session=session, counts=counts(store),
                  calls=recent(store, status, function), status_filter=status or "", function_filter=function or "",
                  statuses=SHOWN, purgeable=PURGEABLE, **extra)


@page
async def overview(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /ui/async[?status=&function=]: counts per function, the newest calls, the dead-letter actions."""
    return await _overview(request, session)


def _call_id(raw: str) -> str:
    if not CALL_ID.match(raw):
        raise ValidationError(f"'{raw[:60]}' is not a call id (a UUID as X-Call-Id gave it)", field="call-id")
    return raw


async def _call_page(request: web.Request, session: Session, call_id: str, status_code: int = 200,
                     **extra: Any) -> web.Response:
    row = _store(request).get(call_id)
    call = describe(row) if row is not None else None
    if call is None and not extra:
        raise NotFound(f"no async call {call_id}", field="call-id")
    return render(request, "async_call.html", status=status_code, session=session, call_id=call_id, call=call,
                  call_json=json.dumps(call, indent=2) if call else "", **extra)


@page
async def call(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /ui/async/{call_id}: the call as ``GET /system/async/<id>`` shows it (response body included)."""
    return await _call_page(request, session, _call_id(request.match_info["call_id"]))


# ---- actions (the API's, after a confirmation) ------------------------------------------------------


def _confirm(request: web.Request, session: Session, what: str, action_path: str,
             fields: dict[str, str]) -> web.Response:
    return render(request, "confirm_async.html", session=session, what=what, action_path=action_path,
                  fields=fields)


@action
async def redrive_call(request: web.Request, session: Session, form: Any) -> web.StreamResponse:
    """POST /ui/async/{call_id}/redrive: ``POST /system/async/<id>/redrive`` once confirmed."""
    call_id = _call_id(request.match_info["call_id"])
    if form.get("confirm") != "yes":
        return _confirm(request, session, f"Run async call {call_id} again from its first attempt?",
                        f"/ui/async/{call_id}/redrive", {})
    try:
        await _admin(request.app[UI_KEY].gateway, "POST", f"/system/async/{call_id}/redrive")
    except HydroError as exc:
        return await _call_page(request, session, call_id, status_code=exc.status, action_error=exc)
    return await _call_page(request, session, call_id, done="Redriven: the call is queued again")


@action
async def purge_call(request: web.Request, session: Session, form: Any) -> web.StreamResponse:
    """POST /ui/async/{call_id}/purge: ``DELETE /system/async/<id>`` once confirmed."""
    call_id = _call_id(request.match_info["call_id"])
    if form.get("confirm") != "yes":
        return _confirm(request, session, f"Forget async call {call_id} and its kept response?",
                        f"/ui/async/{call_id}/purge", {})
    try:
        await _admin(request.app[UI_KEY].gateway, "DELETE", f"/system/async/{call_id}")
    except HydroError as exc:
        return await _call_page(request, session, call_id, status_code=exc.status, action_error=exc)
    return await _overview(request, session, done=f"Purged async call {call_id}")


def _function_field(form: Any) -> str:
    function = str(form.get("function", ""))
    if not DNS_LABEL.match(function):
        raise ValidationError(f"'{function[:80]}' is not a function name", field="function")
    return function


@action
async def redrive_dead(request: web.Request, session: Session, form: Any) -> web.StreamResponse:
    """POST /ui/async/redrive (``function``): ``POST /system/async/dead/redrive?function=f`` once confirmed."""
    try:
        function = _function_field(form)
        if form.get("confirm") != "yes":
            return _confirm(request, session, f"Run every dead async call of {function} again?",
                            "/ui/async/redrive", {"function": function})
        out = await _admin(request.app[UI_KEY].gateway, "POST",
                           "/system/async/dead/redrive?" + urlencode({"function": function}))
    except HydroError as exc:
        return await _overview(request, session, status_code=exc.status, action_error=exc)
    return await _overview(request, session, done=f"Redriven {out.get('redriven', 0)} dead call(s) of {function}")


@action
async def purge_calls(request: web.Request, session: Session, form: Any) -> web.StreamResponse:
    """POST /ui/async/purge (``function``, ``status``): ``DELETE /system/async?status=s&function=f`` once confirmed."""
    status = str(form.get("status", "dead"))
    try:
        function = _function_field(form)
        if form.get("confirm") != "yes":
            return _confirm(request, session, f"Forget every {status} async call of {function}?",
                            "/ui/async/purge", {"function": function, "status": status})
        # the status is the API's to check (400 naming it), as for `hydro async purge --status`
        out = await _admin(request.app[UI_KEY].gateway, "DELETE",
                           "/system/async?" + urlencode({"status": status, "function": function}))
    except HydroError as exc:
        return await _overview(request, session, status_code=exc.status, action_error=exc)
    return await _overview(request, session, done=f"Purged {out.get('purged', 0)} {status} call(s) of {function}")


def live(request: web.Request) -> list[dict[str, Any]]:
    """What the Async screen's event stream sends each period: the counts table (empty while the queue is down)."""
    queue = request.app.get(ASYNC_KEY)
    return counts(queue.store) if queue is not None and queue.store is not None else []
