"""Who is calling: the identities the gateway's limits and metrics decide on, in one place.

* :func:`caller_key_id` — the id of the API key the request authenticated with for this function
  (a key that does not authenticate, or is for other functions, counts as none), so ``rate.per: key``
  falls back to the client address for keyless callers (going keyless is no way around a per-key limit)
  and a caller cannot draw from someone else's bucket by quoting another key's id;
* :func:`is_internal_caller` — whether the request comes from a party the gateway trusts: the admin
  credentials, or a router's internal key (minted by the gateway, scoped to the router's stages). Only
  then do ``X-Hydro-Pipeline``/``X-Hydro-Stage``/``X-Hydro-Shadow`` become metric labels, and only such
  a caller reads a failure's internal cause in a 5xx body.

The client address is the TCP peer, never ``X-Forwarded-For``: a header any caller can set must not
choose whose bucket a request draws from.
"""

from __future__ import annotations

from aiohttp import web

from hydro_serving.errors import HydroError
from hydro_serving.gateway import auth
from hydro_serving.gateway.appkeys import GATEWAY_KEY
from hydro_serving.gateway.keys import ApiKey, looks_like_key

_NO_KEY = object()
_KEY: web.RequestKey[object] = web.RequestKey("hydro.caller_key", object)


def _authenticated_key(request: web.Request) -> ApiKey | None:
    """The API key this request carries, when it is genuine, active and valid for this function (cached)."""
    found = request.get(_KEY)
    if found is None:
        found = _NO_KEY
        name = request.match_info.get("name")
        try:
            credential = auth.presented(request.headers.getall("Authorization", []))
            if name and credential is not None and credential.scheme == "bearer" and looks_like_key(credential.value):
                found = request.app[GATEWAY_KEY].keys.authenticate(credential.value, name)
        except (HydroError, UnicodeError, ValueError):
            found = _NO_KEY
        request[_KEY] = found
    return found if isinstance(found, ApiKey) else None


def caller_key_id(request: web.Request) -> str | None:
    """The id of the API key the caller authenticated with for this function, else None."""
    key = _authenticated_key(request)
    return key.id if key is not None else None


def client_ip(request: web.Request) -> str | None:
    """The TCP peer's address (not X-Forwarded-For, which the caller controls)."""
    return request.remote


def is_internal_caller(request: web.Request) -> bool:
    """True for the gateway's admin credentials or a router's own internal key."""
    try:
        credential = auth.presented(request.headers.getall("Authorization", []))
        if credential is None:
            return False
        if request.app[GATEWAY_KEY].credentials.matches(credential):
            return True
    except (HydroError, UnicodeError, ValueError):
        return False
    key = _authenticated_key(request)
    return key is not None and key.internal
