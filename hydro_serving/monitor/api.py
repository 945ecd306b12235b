"""The monitor's HTTP API: aiohttp handlers the gateway mounts with :func:`register`.

``GET /system/monitoring``                     functions with monitoring and their last window
``GET /system/monitoring/{name}``              windows (with quality from feedback), one window's per-field
                                               table, recent unhealthy rows (``?window=N&limit=K&unhealthy=K``)
``GET /system/monitoring/{name}/histograms``   training (or first window) vs production, same bins (``?window=N``)
``GET /system/monitoring/{name}/rows``         sampled rows, newest first (``?unhealthy=true&limit=K&window=N``)
``POST /system/feedback/{name}``               ground truth: ``{"labels": [{"request_id", "label", "row"?}]}``

The module knows nothing of the gateway: it gets the monitor, a callable listing the deployed
functions' specs, and the gateway's admin guard (a handler decorator) from :func:`register`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from hydro_serving.errors import NotFound, PayloadTooLarge, ValidationError
from hydro_serving.monitor.service import Monitor, labels_from

MONITOR_KEY: web.AppKey[Monitor] = web.AppKey("hydro_monitor", Monitor)
SPECS_KEY: web.AppKey[Any] = web.AppKey("hydro_monitor_specs", object)
MAX_FEEDBACK_ITEMS = 10_000
MAX_FEEDBACK_BYTES = 4 * 1024 * 1024
MAX_ID = 128
MAX_LABEL_TEXT = 256
MAX_ROW = 10_000


MAX_WINDOW = 2**31  # window numbers are SQLite integers; beyond this no window can exist


def _int_query(request: web.Request, key: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{key} must be an integer", field=key) from None
    if not low <= value <= high:
        raise ValidationError(f"{key} must be between {low} and {high}", field=key)
    return value


def _function(request: web.Request) -> tuple[Monitor, str, Any]:
    name = request.match_info["name"]
    spec = request.app[SPECS_KEY]().get(name)
    if spec is None:
        raise NotFound(f"function '{name}' is not deployed", function=name)
    return request.app[MONITOR_KEY], name, spec


def _settings(spec: Any) -> dict[str, Any] | None:
    return spec.monitoring.to_dict() if spec.monitoring is not None else None


async def list_monitoring(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR_KEY]
    specs: Mapping[str, Any] = request.app[SPECS_KEY]()
    out = []
    for name, spec in sorted(specs.items()):
        if spec.monitoring is None:
            continue
        last = await monitor.call(monitor.store.windows, name, 1)
        w = last[-1] if last else None
        out.append({"function": name, "monitoring": _settings(spec), "windows": w["seq"] if w else 0,
                    "drift": bool(w and w.get("drift")), "drifted_fields": w.get("drifted_fields", []) if w else [],
                    "samples_dropped": monitor.sampler.dropped.get(name, 0)})
    return web.json_response(out)


async def function_monitoring(request: web.Request) -> web.Response:
    monitor, name, spec = _function(request)
    limit = _int_query(request, "limit", 20, 1, 500)
    window = _int_query(request, "window", None, 1, MAX_WINDOW)
    unhealthy = _int_query(request, "unhealthy", 20, 0, 1000)
    body = await monitor.call(monitor.overview, name, limit, window, unhealthy)
    if window is not None and body["window"] is None:
        raise NotFound(f"function '{name}' has no window {window}", function=name, field="window")
    body["monitoring"] = _settings(spec)
    if body["window"] is not None:
        body["window"] = {k: v for k, v in body["window"].items() if k != "histograms"}
    return web.json_response(body, dumps=_dumps)


async def histograms(request: web.Request) -> web.Response:
    monitor, name, _ = _function(request)
    window = _int_query(request, "window", None, 1, MAX_WINDOW)
    if window is None:
        last = await monitor.call(monitor.store.windows, name, 1)
        summary = last[-1] if last else None
    else:
        summary = await monitor.call(monitor.store.window, name, window)
    if summary is None:
        raise NotFound(f"function '{name}' has no closed window yet" if window is None
                       else f"function '{name}' has no window {window}", function=name, field="window")
    return web.json_response({"function": name, "window": summary["seq"], "reference": summary.get("reference"),
                              "histograms": summary.get("histograms", [])}, dumps=_dumps)


async def rows(request: web.Request) -> web.Response:
    monitor, name, _ = _function(request)
    limit = _int_query(request, "limit", 50, 1, 1000)
    window = _int_query(request, "window", None, 1, MAX_WINDOW)
    unhealthy = request.query.get("unhealthy", "false").lower() in ("1", "true", "yes")
    found = await monitor.call(lambda: monitor.store.rows(name, unhealthy_only=unhealthy, window=window,
                                                          limit=limit or 50))
    return web.json_response({"function": name, "rows": [r.to_dict() for r in found]}, dumps=_dumps)


def _label(value: Any, where: str) -> Any:
    if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**53):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_LABEL_TEXT:
        return value
    raise ValidationError(f"{where} must be a number, a bool or a string of at most {MAX_LABEL_TEXT} characters",
                          field=where)


def parse_feedback(data: Any) -> list[dict[str, Any]]:
    """Validate ``{"labels": [...]}`` (or the bare list); every error names the item and key."""
    items = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValidationError('the body must be {"labels": [{"request_id": ..., "label": ...}, ...]}',
                              field="labels")
    if not items:
        raise ValidationError("labels is empty", field="labels")
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise ValidationError(f"at most {MAX_FEEDBACK_ITEMS} labels per request", field="labels")
    out = []
    for i, item in enumerate(items):
        where = f"labels[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(f"{where} must be an object", field=where)
        unknown = set(item) - {"request_id", "label", "row"}
        if unknown:
            key = sorted(unknown)[0]
            raise ValidationError(f"unknown key '{key}' in {where}", field=f"{where}.{key}")
        rid = item.get("request_id")
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID or not rid.isprintable():
            raise ValidationError(f"{where}.request_id must be the X-Request-Id of a response "
                                  f"(1 to {MAX_ID} printable characters)", field=f"{where}.request_id")
        if "label" not in item:
            raise ValidationError(f"{where}.label is required", field=f"{where}.label")
        row = item.get("row", 0)
        if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < MAX_ROW:
            raise ValidationError(f"{where}.row must be an integer from 0 to {MAX_ROW - 1} (the record's index "
                                  "in the request)", field=f"{where}.row")
        out.append({"request_id": rid, "label": _label(item["label"], f"{where}.label"), "row": row})
    return out


async def feedback(request: web.Request) -> web.Response:
    monitor, name, _ = _function(request)
    if request.content_length is not None and request.content_length > MAX_FEEDBACK_BYTES:
        raise PayloadTooLarge(f"feedback bodies are limited to {MAX_FEEDBACK_BYTES} bytes", field="(body)")
    raw = await request.read()
    if len(raw) > MAX_FEEDBACK_BYTES:
        raise PayloadTooLarge(f"feedback bodies are limited to {MAX_FEEDBACK_BYTES} bytes", field="(body)")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the request body is not valid JSON", field="(body)") from None
    items = parse_feedback(data)
    result = await monitor.call(monitor.add_feedback, name, labels_from(items))
    return web.json_response(result, status=202)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_clean(value), allow_nan=False)


ROUTES: list[tuple[str, str, Callable[[web.Request], Any]]] = [
    ("GET", "/system/monitoring", list_monitoring),
    ("GET", "/system/monitoring/{name}", function_monitoring),
    ("GET", "/system/monitoring/{name}/histograms", histograms),
    ("GET", "/system/monitoring/{name}/rows", rows),
    ("POST", "/system/feedback/{name}", feedback),
]


def register(app: web.Application, monitor: Monitor, specs: Callable[[], Mapping[str, Any]],
             protect: Callable[[Any], Any]) -> None:
    """Mount the monitor's routes on the gateway's app, each wrapped by the gateway's admin guard."""
    app[MONITOR_KEY] = monitor
    app[SPECS_KEY] = specs
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, protect(handler))


def openapi_paths() -> dict[str, Any]:
    """The monitor's part of the gateway's OpenAPI document."""
    error = {"$ref": "#/components/responses/Error"}
    auth = [{"bearer": []}, {"basic": []}]
    name = {"name": "name", "in": "path", "required": True, "description": "function",
            "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "maxLength": 63}}

    def q(key: str, kind: str, what: str, low: int | None = None, high: int | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": kind}
        if low is not None:
            schema.update(minimum=low, maximum=high)
        return {"name": key, "in": "query", "required": False, "schema": schema, "description": what}

    def op(summary: str, params: list[dict[str, Any]], ok: str = "200", body: bool = False,
           result: str = "object") -> dict[str, Any]:
        out: dict[str, Any] = {"summary": summary, "tags": ["monitoring"], "security": auth, "parameters": params,
                               "responses": {ok: {"description": "OK", "content": {"application/json": {
                                   "schema": {"type": result}}}}, "400": error, "401": error, "404": error}}
        if body:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["labels"], "properties": {"labels": {"type": "array", "items": {
                    "type": "object", "required": ["request_id", "label"], "properties": {
                        "request_id": {"type": "string"}, "row": {"type": "integer", "minimum": 0},
                        "label": {}}}}}}}}}
        return out

    return {
        "/system/monitoring": {"get": {**op("Functions with monitoring and their last window", [], result="array"),
                                       "parameters": []}},
        "/system/monitoring/{name}": {"get": op(
            "Drift windows, the per-field table of one window, recent unhealthy rows",
            [name, q("window", "integer", "window number (default: the last)", 1, MAX_WINDOW),
             q("limit", "integer", "windows listed", 1, 500), q("unhealthy", "integer", "unhealthy rows", 0, 1000)])},
        "/system/monitoring/{name}/histograms": {"get": op(
            "Reference vs production histograms on the same bins",
            [name, q("window", "integer", "window number", 1, MAX_WINDOW)])},
        "/system/monitoring/{name}/rows": {"get": op(
            "Sampled rows, newest first", [name, q("unhealthy", "boolean", "only rows that failed a check"),
                                           q("limit", "integer", "rows", 1, 1000),
                                           q("window", "integer", "window", 1, MAX_WINDOW)])},
        "/system/feedback/{name}": {"post": op("Ground truth for sampled predictions, joined by request id",
                                               [name], ok="202", body=True)},
    }
