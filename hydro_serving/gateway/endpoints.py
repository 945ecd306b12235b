"""Endpoint leases: a router beside its stages may call their warm replicas itself, the gateway stays in charge.

A router replica sends ``POST /function/<stage>`` with ``X-Hydro-Endpoints: lease`` (through the
same transport as its stage calls; see :mod:`hydro_serving.router.direct` for the router's side).
The gateway answers ``{"function", "endpoints": [{"url", "replica", "concurrency"}], "ttl",
"reason"}``:

* **who**: only a router's internal key (minted at its deploy, scoped to its stages) that is valid
  for this stage: no credential is 401, a user's API key or the admin token is 403 (they have the
  gateway), another router's key is 403 for stages that are not its own;
* **which replicas**: the *ready* replicas of the newest generation, only on a provider whose
  replicas the router can reach on this machine (local), and only for a stage nothing at the door
  applies to (no ``rate:`` limit, no ``monitoring:`` sampling): otherwise ``endpoints`` is empty and
  ``reason`` says why, and the router keeps calling through the gateway. A cold stage has no ready
  replica: the empty lease sends the router's next call through the gateway, which starts one;
* **what the gateway keeps**: the body reports the direct calls made since the last lease
  (``{"calls": {"200": n, ...}, "seconds": s, "stages": [...]}``), counted as invocations
  (``invocationCount``, ``hydro_gateway_invocations_total``) and in the pipeline's stage series
  (``hydro_pipeline_stage_*``, labelled with the router the key belongs to, never a name the report
  gives); ``hydro_gateway_request_duration_seconds`` holds only calls the gateway timed. A lease
  marks its replicas used now, so a stage a router is calling directly is not reaped as idle, and
  the report's ``inflight`` (the router's peak of direct calls per replica) counts in the scaler's
  scale-up decision, so a stage called only directly still scales up to ``scale.max``. A
  lease lasts ``ttl`` seconds (at most a quarter of the stage's ``scale.idle``): the router renews
  leases it uses, and a replica drained or redeployed away leaves the router's leases within
  ``ttl``; the scaler stops a drained replica only once its last lease lapsed (``leased_until``), so
  no direct call is cut by the stop (a call to a replica that is gone anyway is refused and goes
  through the gateway).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from hydro_serving.errors import Forbidden, PayloadTooLarge, Unauthorized, ValidationError
from hydro_serving.gateway import auth
from hydro_serving.gateway.keys import looks_like_key
from hydro_serving.gateway.scaler import FunctionPool
from hydro_serving.replica import contract

ENDPOINTS_HEADER = contract.ENDPOINTS_HEADER
LEASE_TTL = 1.0  # seconds; short, so a drained or redeployed replica leaves leases quickly
LEASE_HOLD = 3  # ttls a router may keep using a lease it could not renew (router/direct.py's expiry)
DIRECT_PROVIDERS = frozenset({"local"})  # providers whose replicas a router replica reaches on this machine
MAX_REPORT = 1024 * 1024  # bytes of a lease's report (latency samples of busy stages)
MAX_STAGES = 64
MAX_SAMPLES = 4096
MAX_STATUSES = 64
MAX_CALLS = 10_000_000


def is_lease(request: web.Request) -> bool:
    return ENDPOINTS_HEADER in request.headers


async def lease(request: web.Request, gw: Any, pool: FunctionPool) -> web.Response:
    """Answer one router's lease of ``pool``'s endpoints, after counting the calls it reports."""
    name = pool.name
    router = _router_of(gw, request, name)
    if request.headers.get(ENDPOINTS_HEADER, "").strip().lower() != "lease":
        raise ValidationError(f"{ENDPOINTS_HEADER} must be 'lease'", field=ENDPOINTS_HEADER, function=name)
    if request.content_length is not None and request.content_length > MAX_REPORT:
        raise PayloadTooLarge(f"a lease report is at most {MAX_REPORT} bytes", function=name)
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):  # read() returns what has arrived, not all
        size += len(chunk)
        if size > MAX_REPORT:
            raise PayloadTooLarge(f"a lease report is at most {MAX_REPORT} bytes", function=name)
        chunks.append(chunk)
    body = b"".join(chunks)
    calls, stages, inflight = parse_report(body, name)
    count(pool, calls)
    by_url = {r.endpoint.rstrip("/"): r for r in pool.replicas}
    for url, peak in inflight.items():  # the router's direct load of each replica, for scaling decisions
        replica = by_url.get(url.rstrip("/"))
        if replica is not None:
            replica.direct_inflight = peak
    for stage, shadow, errors, samples in stages:  # the per-pipeline stage series the router's calls would feed
        series = gw.metrics.shadow_duration if shadow else gw.metrics.stage_duration
        failed = gw.metrics.shadow_errors if shadow else gw.metrics.stage_errors
        child = series.labels(router, stage, name)
        for seconds in samples:
            child.observe(seconds)
        if errors:
            failed.labels(router, stage, name).inc(errors)
    reason = why_not(gw, pool)
    ready = [] if reason else ready_replicas(pool)
    if not reason and not ready:  # a stage whose ready replicas are all on private sockets is not "cold"
        on_sockets = any(r.state == "ready" and getattr(r, "socket", None) for r in pool.replicas)
        reason = "socket" if on_sockets else "cold"
    now = time.monotonic()
    ttl = max(0.05, min(LEASE_TTL, pool.spec.scale.idle / 4))
    for replica in ready:  # the router is using them: not idle; and a drain waits until its lease lapses
        replica.last_used = now
        replica.leased_until = now + LEASE_HOLD * ttl
    if any(peak >= pool.spec.scale.concurrency for peak in inflight.values()):  # a router found a replica full
        pool.maybe_scale_up()
    return web.json_response({
        "function": name, "router": router, "ttl": ttl, "reason": reason,
        "endpoints": [{"url": r.endpoint, "replica": r.id, "concurrency": pool.spec.scale.concurrency}
                      for r in ready],
    })


def _router_of(gw: Any, request: web.Request, name: str) -> str:
    """The router whose internal key this request carries, if that key is valid for ``name``; else 401/403."""
    credential = auth.presented(request.headers.getall("Authorization", []))
    if credential is None:
        raise Unauthorized(f"leasing endpoints of '{name}' needs a router's own key", function=name)
    if gw.credentials.matches(credential):
        raise Forbidden("endpoint leases are for routers' own keys, not the admin credentials", function=name)
    if credential.scheme != "bearer" or not looks_like_key(credential.value):
        raise Unauthorized(f"leasing endpoints of '{name}' needs a router's own key ('Bearer hk_...')",
                           function=name)
    key = gw.keys.authenticate(credential.value, name)  # 401 invalid/revoked, 403 another router's stage
    if not key.internal:
        raise Forbidden(f"API key '{key.name}' is not a router's key: only routers lease endpoints", function=name)
    parts = key.name.split(":")  # router:<name>:<generation>
    return parts[1] if len(parts) == 3 else key.name


Stages = list[tuple[str, bool, int, list[float]]]  # (stage index, shadow, errors, latencies)


def parse_report(body: bytes, name: str) -> tuple[dict[int, int], Stages, dict[str, int]]:
    """``{"calls": {"<status>": n}, "seconds": s, "pipeline": p, "stages": [...], "inflight": {url: n}}``.

    ``stages`` entries are ``{"stage": "2", "shadow": false, "errors": n, "seconds": [latency, ...]}``;
    ``inflight`` is the most direct calls the router had in flight per replica since its last lease.
    An empty body reports nothing.
    """
    if not body.strip():
        return {}, [], {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("a lease report must be a JSON object", field="(body)", function=name) from None
    if not isinstance(data, dict):
        raise ValidationError("a lease report must be a JSON object", field="(body)", function=name)
    unknown = sorted(set(data) - {"calls", "seconds", "pipeline", "stages", "inflight"})
    if unknown:
        raise ValidationError(f"unknown field '{unknown[0]}' in a lease report (known: calls, inflight, pipeline, "
                              "seconds, stages)", field=unknown[0], function=name)
    raw_calls = data.get("calls", {})
    if not isinstance(raw_calls, dict) or len(raw_calls) > MAX_STATUSES:
        raise ValidationError(f"calls must be an object of at most {MAX_STATUSES} statuses", field="calls",
                              function=name)
    calls: dict[int, int] = {}
    for status, n in raw_calls.items():
        if not (isinstance(status, str) and status.isdigit() and 100 <= int(status) <= 599):
            raise ValidationError(f"calls: {status!r} is not an HTTP status", field=f"calls.{status}", function=name)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_CALLS:
            raise ValidationError(f"calls.{status} must be an integer from 0 to {MAX_CALLS}",
                                  field=f"calls.{status}", function=name)
        calls[int(status)] = n
    seconds = data.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 1e9:
        raise ValidationError("seconds must be a non-negative number", field="seconds", function=name)
    raw_inflight = data.get("inflight", {})
    if not isinstance(raw_inflight, dict) or len(raw_inflight) > MAX_STAGES:
        raise ValidationError(f"inflight must be an object of at most {MAX_STAGES} replica URLs", field="inflight",
                              function=name)
    inflight: dict[str, int] = {}
    for url, n in raw_inflight.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_CALLS:
            raise ValidationError("inflight values must be counts", field=f"inflight.{url}", function=name)
        inflight[str(url)] = n
    return calls, _parse_stages(data.get("stages", []), name), inflight


def _parse_stages(raw: Any, name: str) -> Stages:
    if not isinstance(raw, list) or len(raw) > MAX_STAGES:
        raise ValidationError(f"stages must be a list of at most {MAX_STAGES} entries", field="stages", function=name)
    out: Stages = []
    for i, entry in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"stage", "shadow", "errors", "seconds"}:
            raise ValidationError(f"{where} must be an object of stage, shadow, errors, seconds", field=where,
                                  function=name)
        stage, shadow = entry.get("stage"), entry.get("shadow", False)
        errors, samples = entry.get("errors", 0), entry.get("seconds", [])
        if not (isinstance(stage, str) and stage.isdigit() and len(stage) <= 4):
            raise ValidationError(f"{where}.stage must be a stage position like '2'", field=f"{where}.stage",
                                  function=name)
        if not isinstance(shadow, bool):
            raise ValidationError(f"{where}.shadow must be true or false", field=f"{where}.shadow", function=name)
        if isinstance(errors, bool) or not isinstance(errors, int) or not 0 <= errors <= MAX_CALLS:
            raise ValidationError(f"{where}.errors must be a count", field=f"{where}.errors", function=name)
        if not isinstance(samples, list) or len(samples) > MAX_SAMPLES or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 1e6 for x in samples):
            raise ValidationError(f"{where}.seconds must be at most {MAX_SAMPLES} latencies in seconds",
                                  field=f"{where}.seconds", function=name)
        out.append((stage, shadow, errors, [float(x) for x in samples]))
    return out


def count(pool: FunctionPool, calls: dict[int, int]) -> None:
    """The reported direct calls become invocations, as if they had passed through the gateway."""
    pool.invocations += sum(calls.values())
    for status, n in calls.items():
        if n:
            pool.metrics.invoked_many(status, n)  # the duration histogram holds only calls the gateway timed


def why_not(gw: Any, pool: FunctionPool) -> str | None:
    """Why calls of this stage must pass through the gateway, or None when a router may skip it."""
    if gw.provider.name not in DIRECT_PROVIDERS or gw.provider.manages_scaling:
        return "provider"
    if pool.closed:
        return "removed"
    if pool.spec.rate is not None:
        return "rate"
    if pool.spec.monitoring is not None:
        return "monitoring"
    return None


def ready_replicas(pool: FunctionPool) -> list[Any]:
    """The ready replicas of the newest generation that has one (older ones only serve during a swap)."""
    # a replica on a unix socket listens in its function's private run folder (0600, the function's uid):
    # no other function, a router included, may connect to it, so it is never leased (calls go through
    # the gateway, over the gateway's own socket); only TCP replicas (HYDRO_REPLICA_TRANSPORT=tcp) are
    ready = [r for r in pool.replicas if r.state == "ready" and getattr(r, "socket", None) is None]
    if not ready:
        return []
    newest = max(r.generation for r in ready)
    return [r for r in ready if r.generation == newest]
