"""Rate limits at the gateway's door: token buckets per function and per caller, decided before any replica starts.

``rate: {rps: 100, burst: 200, per: key|ip|function}`` in stack.yml gives each bucket ``burst`` tokens that
refill at ``rps`` per second; a request takes one, and a request that finds none is a 429 with
``Retry-After`` (seconds until a token is back) and the IETF ``RateLimit-Policy``/``RateLimit`` fields
(draft-ietf-httpapi-ratelimit-headers: ``"fn";q=<burst>;w=<seconds to refill>`` and
``"fn";r=<tokens left>;t=<seconds to full>``), so a client can slow down before it is refused.

Whose bucket: ``per: key`` is one per API key (callers without a key share one per client address, so
going keyless is no way around it), ``per: ip`` one per client address, ``per: function`` one for everybody.

Memory stays bounded whatever callers do: buckets live in an LRU of ``max_buckets`` entries. A bucket that
has refilled to full carries no state and is dropped first; only when every tracked bucket is partly spent
is the least recently used one forgotten (it comes back full, which errs toward serving). Buckets live in
one gateway process: several gateway replicas (Knative) each enforce the limit, so the fleet admits up to
replicas x rps — the README says so.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

PER_KEY = "key"
PER_IP = "ip"
PER_FUNCTION = "function"
PER_CHOICES = (PER_KEY, PER_IP, PER_FUNCTION)
DEFAULT_MAX_BUCKETS = 100_000


@dataclass(frozen=True)
class RatePolicy:
    """``rps`` tokens a second into a bucket of ``burst`` tokens, one bucket per ``per``."""

    rps: float
    burst: int
    per: str = PER_KEY

    def __post_init__(self) -> None:
        if not (self.rps > 0 and math.isfinite(self.rps)):
            raise ValueError("rate.rps must be a positive number")
        if self.burst < 1:
            raise ValueError("rate.burst must be at least 1")
        if self.per not in PER_CHOICES:
            raise ValueError(f"rate.per must be one of {', '.join(PER_CHOICES)}")

    @classmethod
    def from_dict(cls, raw: dict) -> RatePolicy:
        rps = float(raw["rps"])
        burst = int(raw["burst"]) if raw.get("burst") is not None else max(1, math.ceil(rps))
        return cls(rps=rps, burst=burst, per=str(raw.get("per", PER_KEY)))

    def to_dict(self) -> dict:
        return {"rps": self.rps, "burst": self.burst, "per": self.per}

    @property
    def window(self) -> float:
        """Seconds an empty bucket takes to refill: the policy's window in the IETF header."""
        return self.burst / self.rps


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after: float  # seconds until one token is back (0 when allowed)
    reset: float  # seconds until the bucket is full again


class RateLimiter:
    """All buckets of one gateway; thread-safe, ``clock`` injectable so tests need no sleeping."""

    def __init__(self, max_buckets: int = DEFAULT_MAX_BUCKETS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_buckets = max_buckets
        self._clock = clock
        self._lock = threading.Lock()
        # (function, identity) -> (tokens, last refill time, policy it was filled under)
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float, RatePolicy]] = OrderedDict()

    @staticmethod
    def identity(policy: RatePolicy, key_id: str | None, client_ip: str | None) -> str:
        """Whose bucket a request draws from (see the module docstring)."""
        if policy.per == PER_FUNCTION:
            return "*"
        if policy.per == PER_KEY and key_id:
            return f"key:{key_id}"
        return f"ip:{client_ip or '?'}"

    def take(self, function: str, policy: RatePolicy, identity: str) -> RateDecision:
        """Take one token from the bucket of ``(function, identity)``; refuse when there is none."""
        now = self._clock()
        slot = (function, identity)
        with self._lock:
            entry = self._buckets.get(slot)
            if entry is None or entry[2] != policy:  # new caller, or the policy changed: start full
                tokens = float(policy.burst)
            else:
                tokens = min(float(policy.burst), entry[0] + (now - entry[1]) * policy.rps)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[slot] = (tokens, now, policy)
            self._buckets.move_to_end(slot)
            if len(self._buckets) > self.max_buckets:
                self._evict(now)
        retry_after = 0.0 if allowed else (1.0 - tokens) / policy.rps
        return RateDecision(allowed, int(tokens), retry_after, (policy.burst - tokens) / policy.rps)

    def _evict(self, now: float) -> None:
        """Drop full buckets (no state lost), then the least recently used, down to 90% of the cap."""
        target = int(self.max_buckets * 0.9)
        for slot in [s for s, (tokens, at, pol) in self._buckets.items()
                     if tokens + (now - at) * pol.rps >= pol.burst]:
            del self._buckets[slot]
            if len(self._buckets) <= target:
                return
        while len(self._buckets) > target:
            self._buckets.popitem(last=False)

    def forget(self, function: str) -> None:
        """A removed function's buckets go with it."""
        with self._lock:
            for slot in [s for s in self._buckets if s[0] == function]:
                del self._buckets[slot]

    def __len__(self) -> int:
        return len(self._buckets)


def rate_headers(function: str, policy: RatePolicy, decision: RateDecision) -> dict[str, str]:
    """The IETF RateLimit-Policy / RateLimit fields (and ``Retry-After`` on a refusal)."""
    name = _sf_string(function)
    headers = {
        "RateLimit-Policy": f"{name};q={policy.burst};w={max(1, math.ceil(policy.window))}",
        "RateLimit": f"{name};r={decision.remaining};t={math.ceil(decision.reset)}",
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
    return headers


def _sf_string(value: str) -> str:
    """A structured-field string (RFC 8941): quoted, with ``\\`` and ``"`` escaped; names are DNS labels anyway."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
