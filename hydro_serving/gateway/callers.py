"""Who is calling: the identities the gateway's limits and metrics decide on, in one place.

Two seams the lead wires at merge time (kept as small functions so the wiring is one line each):

* :func:`caller_key_id` — the id of the per-function API key the request was authenticated with
  (the "auth" work adds those keys); until then None, so ``rate.per: key`` falls back to the
  client address (going keyless is no way around a per-key limit);
* :func:`is_internal_caller` — whether the request comes from a party the gateway trusts to label
  its metrics (a router with its internal key): only then do ``X-Hydro-Pipeline``/``X-Hydro-Stage``/
  ``X-Hydro-Shadow`` become metric labels. Until router keys exist, the admin credentials count.

The client address is the TCP peer, never ``X-Forwarded-For``: a header any caller can set must not
choose whose bucket a request draws from.
"""

from __future__ import annotations

from aiohttp import web

from hydro_serving.errors import HydroError
from hydro_serving.gateway.appkeys import GATEWAY_KEY


def caller_key_id(request: web.Request) -> str | None:
    """The API key id the caller authenticated with (None until per-function keys are wired in)."""
    return None


def client_ip(request: web.Request) -> str | None:
    """The TCP peer's address (not X-Forwarded-For, which the caller controls)."""
    return request.remote


def is_internal_caller(request: web.Request) -> bool:
    """True when the request carries the gateway's admin (internal) credentials."""
    authorization = request.headers.get("Authorization")
    if not authorization:
        return False
    try:
        return bool(request.app[GATEWAY_KEY].credentials.matches(authorization))
    except (HydroError, UnicodeError, ValueError):
        return False
