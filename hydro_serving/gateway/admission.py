"""Admission of one invocation: the function's rate limit, decided before any replica is involved.

The request path calls :func:`admit` once; it returns the IETF ``RateLimit-Policy``/``RateLimit``
headers for the response, or raises a 429 (``Retry-After`` and the same headers) and counts it in
``hydro_gateway_rate_limited_total{function}``. Whose bucket is decided by
:meth:`~hydro_serving.gateway.ratelimit.RateLimiter.identity` from :mod:`~hydro_serving.gateway.callers`.
"""

from __future__ import annotations

from functools import lru_cache

from aiohttp import web

from hydro_serving.errors import TooManyRequests
from hydro_serving.gateway.callers import caller_key_id, client_ip
from hydro_serving.gateway.ratelimit import RateLimiter, RatePolicy, rate_headers
from hydro_serving.gateway.scaler import FunctionPool
from hydro_serving.stack.model import Rate


@lru_cache(maxsize=1024)
def policy_of(rate: Rate) -> RatePolicy:
    """The limiter's policy for a spec's ``rate`` (validated once per distinct rate)."""
    return RatePolicy(rps=rate.rps, burst=rate.burst, per=rate.per)


def admit(request: web.Request, limiter: RateLimiter, pool: FunctionPool) -> dict[str, str]:
    """Take a token for this request from its bucket; 429 when there is none. Returns the headers to send."""
    rate = pool.spec.rate
    if rate is None:
        return {}
    policy = policy_of(rate)
    identity = RateLimiter.identity(policy, caller_key_id(request), client_ip(request))
    decision = limiter.take(pool.name, policy, identity)
    headers = rate_headers(pool.name, policy, decision)
    if not decision.allowed:
        pool.metrics.rate_limited.inc()
        per = {"key": "API key", "ip": "client address", "function": "function"}[policy.per]
        raise TooManyRequests(f"rate limit of function '{pool.name}' exceeded ({policy.rps:g}/s, burst "
                              f"{policy.burst}, per {per}); retry after {headers['Retry-After']}s",
                              field="rate", function=pool.name, headers=headers)
    return headers
