"""Page and form handlers of the web UI.

Why these handlers hold no rules of their own: an action calls what the API and the CLI call (the
gateway's pools, the model store's ``set_alias``, the function through the gateway's own
``/function/<name>`` route), so validation and errors are the platform's; a refused action is shown
inline on the page it came from, with the platform's message and field. Every page needs a session
(else a redirect to the login page), every form a CSRF token (else 403), see :mod:`.session`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import jinja2
from aiohttp import web

import hydro_serving.ui.data as data
import hydro_serving.ui.svg as svg
from hydro_serving.errors import HydroError, NotFound, ValidationError
from hydro_serving.gateway.core import Gateway
from hydro_serving.ui.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    Session,
    Sessions,
    check_csrf,
    check_origin,
    cookie_options,
)
from hydro_serving.ui.stats import Recorder

Handler = Callable[..., Awaitable[web.StreamResponse]]
HIDDEN_HEADERS = ("date", "server", "connection", "keep-alive", "transfer-encoding")  # transport noise
MAX_TRY_BODY = 1024 * 1024


class UI:
    """Everything the UI keeps for one gateway application: templates, sessions, the traffic recorder."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sessions = Sessions(gateway.credentials)
        self.recorder = Recorder(gateway.metrics)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("hydro_serving.ui", "templates"),
            autoescape=jinja2.select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["ms"] = data.fmt_ms
        self.templates.filters["rate"] = data.fmt_rate
        self.templates.filters["compact"] = lambda v: json.dumps(v, default=str)[:300]
        self.templates.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
        self.closing = asyncio.Event()

    def sample(self) -> None:
        self.recorder.sample(list(self.gateway.pools))


UI_KEY: web.AppKey[UI] = web.AppKey("hydro_ui", UI)


def render(request: web.Request, template: str, status: int = 200, session: Session | None = None,
           **context: Any) -> web.Response:
    ui = request.app[UI_KEY]
    html = ui.templates.get_template(template).render(
        csrf=session.csrf if session else None, csrf_field=CSRF_FIELD, path=request.path, **context)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                 "style-src 'self'; script-src 'self'; frame-ancestors 'none'"})


def page(handler: Handler) -> Handler:
    """A screen: redirect to the login page without a session; a platform error becomes an error page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        ui = request.app[UI_KEY]
        session = ui.sessions.current(request)
        if session is None:
            raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs, safe='/')}")
        started = time.perf_counter()
        try:
            response = await handler(request, session)
        except HydroError as exc:
            response = render(request, "error.html", status=exc.status, session=session, error=exc)
        # the server's share of the page time, for the browser's devtools and bench/ui_render.py
        response.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - started) * 1000:.2f}"
        return response

    wrapped.__doc__ = handler.__doc__
    return wrapped


def action(handler: Handler) -> Handler:
    """A form post: a session (else 401), a same-origin request and the session's CSRF token (else 403)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        ui = request.app[UI_KEY]
        session = ui.sessions.require(request)
        check_origin(request)
        form = await request.post()
        check_csrf(session.csrf, form)
        return await handler(request, session, form)

    wrapped.__doc__ = handler.__doc__
    return wrapped


# ---- login --------------------------------------------------------------------------------------------


def _safe_next(raw: str | None) -> str:
    """Only a path of the UI itself (no open redirect to another site)."""
    if raw and raw.startswith("/ui/") and "//" not in raw and "\\" not in raw and len(raw) < 500:
        return raw
    return "/ui/functions"


async def login_page(request: web.Request) -> web.StreamResponse:
    ui = request.app[UI_KEY]
    if ui.sessions.current(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return _login_form(request, None, 200, request.query.get("next"))


def _login_form(request: web.Request, error: str | None, status: int, next_path: str | None) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", status=status, login_csrf=token, error=error,
                      next=_safe_next(next_path))
    response.set_cookie(LOGIN_COOKIE, token, **cookie_options(request, max_age=3600))
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """POST /ui/login: the admin user and password of the gateway's credentials."""
    ui = request.app[UI_KEY]
    check_origin(request)
    form = await request.post()
    next_path = str(form.get("next", ""))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected:
        return _login_form(request, "the login form expired (or cookies are off): try again", 403, next_path)
    check_csrf(expected, form)
    try:
        ui.sessions.admit_login(request.remote)
    except HydroError as exc:
        response = _login_form(request, exc.message, exc.status, next_path)
        response.headers.update(exc.headers)
        return response
    user, password = str(form.get("user", "")), str(form.get("password", ""))
    if not ui.sessions.check_password(user, password):
        return _login_form(request, "wrong user or password", 401, next_path)
    session = ui.sessions.create()
    response = web.HTTPSeeOther(_safe_next(next_path))
    response.set_cookie("hydro_ui", session.id, **cookie_options(request))
    response.del_cookie(LOGIN_COOKIE, path="/ui")
    return response


@action
async def logout(request: web.Request, session: Session, form: Any) -> web.StreamResponse:
    request.app[UI_KEY].sessions.drop(session.id)
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie("hydro_ui", path="/ui")
    return response


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/ui/functions")


# ---- functions ----------------------------------------------------------------------------------------


@page
async def functions(request: web.Request, session: Session) -> web.StreamResponse:
    ui = request.app[UI_KEY]
    ui.sample()
    query = request.query.get("q", "")[:100]
    sort = request.query.get("sort", "name")
    descending = request.query.get("dir") == "desc"
    rows = data.function_rows(ui.gateway, ui.recorder, query, sort, descending)
    return render(request, "functions.html", session=session, rows=[data.live_row(r) for r in rows],
                  q=query, sort=sort if sort in data.SORT_KEYS else "name", descending=descending,
                  sort_keys=data.SORT_KEYS, total=len(ui.gateway.pools))


def _form_fields(signature: Any) -> list[dict[str, Any]]:
    if signature is None:
        return []
    out = []
    for f in signature.inputs:
        row_shape = f.row_shape
        scalar = row_shape == () or (row_shape is None and f.shape is None)
        out.append({"name": f.name, "dtype": f.dtype, "shape": list(f.shape) if f.shape is not None else None,
                    "scalar": scalar, "id": f"field-{f.name}"})
    return out


def _convert(value: str, dtype: str, scalar: bool, name: str) -> Any:
    """A form field's text as the signature's type (a JSON value for a non-scalar row)."""
    text = value.strip()
    if not scalar:
        try:
            return json.loads(text)
        except ValueError:
            raise ValidationError(f"{name} must be JSON (a list for shape with more dimensions)", field=name) from None
    if dtype.startswith(("float", "double")):
        try:
            return float(text)
        except ValueError:
            raise ValidationError(f"{name} must be a number", field=name) from None
    if dtype.startswith(("int", "uint")):
        try:
            return int(text)
        except ValueError:
            raise ValidationError(f"{name} must be an integer", field=name) from None
    if dtype == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValidationError(f"{name} must be true or false", field=name)
        return text.lower() in ("true", "1")
    return value


async def _function_page(request: web.Request, session: Session, name: str, status: int = 200,
                         **extra: Any) -> web.Response:
    ui = request.app[UI_KEY]
    gw = ui.gateway
    pool = gw.pool(name)  # 404 page when not deployed
    ui.sample()
    detail = data.function_detail(gw, ui.recorder, name)
    logs: list[str] = []
    try:
        async for line in gw.provider.logs(name, tail=30, follow=False):
            logs.append(line)
    except HydroError:
        logs = []
    sig = data.signature_of(gw, name)
    return render(request, "function.html", status=status, session=session, name=name, spec=pool.spec.to_dict(),
                  detail=detail, row=data.live_row(detail["row"]), cold=data.cold_text(detail["cold"]), logs=logs,
                  fields=_form_fields(sig), mode=extra.pop("mode", "form"), **extra)


@page
async def function(request: web.Request, session: Session) -> web.StreamResponse:
    return await _function_page(request, session, request.match_info["name"])


@action
async def try_function(request: web.Request, session: Session, form: Any) -> web.StreamResponse:
    """POST /ui/functions/{name}/try: build the request from the form, send it through the gateway's route."""
    ui = request.app[UI_KEY]
    gw = ui.gateway
    name = request.match_info["name"]
    pool = gw.pools.get(name)
    if pool is None:
        raise NotFound(f"function '{name}' is not deployed", function=name)
    mode = str(form.get("mode", "form"))
    raw = str(form.get("body", ""))
    values = {k[2:]: str(v) for k, v in form.items() if k.startswith("f.")}
    try:
        if mode == "form":
            fields = _form_fields(data.signature_of(gw, name))
            if not fields:
                raise ValidationError("this function declares no signature: use the JSON mode", field="mode")
            record = {f["name"]: _convert(values.get(f["name"], ""), f["dtype"], f["scalar"], f["name"])
                      for f in fields}
            body = json.dumps([record]).encode()
            path = f"/function/{name}"
        elif mode in ("json", "v2"):
            if len(raw) > MAX_TRY_BODY:
                raise ValidationError(f"the body is larger than {MAX_TRY_BODY} bytes", field="body")
            try:
                json.loads(raw)
            except ValueError as exc:
                raise ValidationError(f"the body is not valid JSON: {exc}", field="body") from None
            body = raw.encode()
            path = f"/function/{name}" + (f"/v2/models/{name}/infer" if mode == "v2" else "")
        else:
            raise ValidationError("mode must be form, json or v2", field="mode")
    except ValidationError as exc:
        return await _function_page(request, session, name, status=400, form_error=exc, mode=mode, raw=raw,
                                    values=values)
    result = await _call(gw, path, body, pool.spec.timeout + gw.config.cold_start_timeout)
    return await _function_page(request, session, name, result=result, mode=mode, raw=raw, values=values)


async def _call(gw: Gateway, path: str, body: bytes, timeout: float) -> dict[str, Any]:
    """One call of the gateway's own route (admin credentials: never forwarded to the function)."""
    assert gw.session is not None
    started = time.perf_counter()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {gw.credentials.token}"}
    try:
        async with gw.session.post(gw.config.url + path, data=body, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            status, resp_headers = resp.status, resp.headers
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"status": None, "error": f"the gateway did not answer: {type(exc).__name__}",
                "ms": (time.perf_counter() - started) * 1000, "headers": [], "body": ""}
    elapsed = (time.perf_counter() - started) * 1000
    try:
        shown = json.dumps(json.loads(raw), indent=2)
    except ValueError:
        shown = raw[:20000].decode(errors="replace")
    return {"status": status, "ms": elapsed, "body": shown,
            "headers": [(k, v) for k, v in resp_headers.items() if k.lower() not in HIDDEN_HEADERS]}


# ---- pipelines ----------------------------------------------------------------------------------------


@page
async def pipelines(request: web.Request, session: Session) -> web.StreamResponse:
    ui = request.app[UI_KEY]
    return render(request, "pipelines.html", session=session, pipelines=await data.pipelines(ui.gateway))


# ---- models -------------------------------------------------------------------------------------------


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _store() -> Any:
    from hydro_serving.store import open_store

    return open_store()


def _models_overview() -> list[dict[str, Any]]:
    store = _store()
    out = []
    for name in store.list_models():
        versions = store.versions(name)
        out.append({"name": name, "versions": versions, "aliases": store.aliases(name)})
    return out


@page
async def models(request: web.Request, session: Session) -> web.StreamResponse:
    try:
        overview = await _in_thread(_models_overview)
        error = None
    except HydroError as exc:
        overview, error = [], exc
    return render(request, "models.html", session=session, models=overview, store_error=error)


def _model_detail(name: str, version: int | None) -> dict[str, Any]:
    store = _store()
    versions = store.versions(name)
    if not versions:
        raise NotFound(f"model '{name}' has no versions in the store", field="name")
    chosen = version if version is not None else versions[-1]
    manifest = store.get_manifest(f"{name}:{chosen}")
    signed = store.get_signature(name, chosen)
    signer = "unsigned"
    if signed is not None:  # as `hydro model show` says it
        try:
            signer = f"key {json.loads(signed)['key_id']}"
        except (ValueError, KeyError, TypeError):
            signer = "a damaged manifest.sig"
    profile = manifest.training_profile or {}
    columns = profile.get("columns") or []
    return {"name": name, "versions": versions, "aliases": store.aliases(name), "version": chosen,
            "manifest": manifest.to_dict(), "files": [f.to_dict() for f in manifest.files],
            "signature": manifest.signature.to_dict() if manifest.signature else None, "signer": signer,
            "signed": bool(signed), "profile": profile,
            "profile_charts": [{"name": c.get("name"), "type": c.get("type"), "svg": svg.profile_histogram(c)}
                               for c in columns if isinstance(c, dict)]}


def _version_query(raw: str | None, field: str = "version") -> int | None:
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{field} must be an integer", field=field) from None
    if value < 1:
        raise ValidationError(f"{field} must be 1 or more", field=field)
    return value


async def _model_page(request: web.Request, session: Session, name: str, version: int | None,
                      status: int = 200, **extra: Any) -> web.Response:
    detail = await _in_thread(_model_detail, name, version)
    return render(request, "model.html", status=status, session=session, m=detail, **extra)


@page
async def model(request: web.Request, session: Session) -> web.StreamResponse:
    return await _model_page(request, session, request.match_info["name"], _version_query(request.query.get("version")))


@action
async def move_alias(request: web.Request, session: Session, form: Any) -> web.StreamResponse:
    """POST /ui/models/{name}/alias: ``alias``, ``version``; asks for confirmation unless ``confirm=yes``."""
    name = request.match_info["name"]
    alias = str(form.get("alias", "")).strip()
    try:
        version = _version_query(str(form.get("version", "")))
        if version is None:
            raise ValidationError("choose the version the alias should point at", field="version")
        if not alias:
            raise ValidationError("alias is required", field="alias")
        if form.get("confirm") != "yes":
            current = (await _in_thread(lambda: _store().aliases(name))).get(alias)
            return render(request, "confirm_alias.html", session=session, name=name, alias=alias, version=version,
                          current=current)
        await _in_thread(lambda: _store().set_alias(name, version, alias))
    except HydroError as exc:
        return await _model_page(request, session, name, None, status=exc.status, alias_error=exc)
    return await _model_page(request, session, name, version, moved=f"{name}:{alias} -> {name}:{version}")


# ---- monitoring ---------------------------------------------------------------------------------------


@page
async def monitoring(request: web.Request, session: Session) -> web.StreamResponse:
    gw = request.app[UI_KEY].gateway
    return render(request, "monitoring.html", session=session, functions=await data.monitoring_list(gw))


@page
async def monitor(request: web.Request, session: Session) -> web.StreamResponse:
    gw = request.app[UI_KEY].gateway
    name = request.match_info["name"]
    pool = gw.pool(name)
    if pool.spec.monitoring is None:
        raise NotFound(f"function '{name}' is not monitored (no monitoring: in its spec)", function=name)
    window = _version_query(request.query.get("window"), "window")
    detail = await data.monitoring_detail(gw, name, window)
    if window is not None and not detail["window"]:
        raise NotFound(f"function '{name}' has no window {window}", function=name, field="window")
    return render(request, "monitor.html", session=session, d=detail)
