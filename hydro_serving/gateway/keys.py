"""Per-function API keys: what a caller (or a router) presents on ``/function/<fn>``.

A key is ``hk_<id>_<secret>``: ``id`` (16 hex digits) finds the key without touching the secret,
``secret`` is 32 random bytes (url-safe base64). Only ``sha256(secret)`` is stored, so a copy of
``gateway.db`` lets nobody call a function; the check compares digests in constant time. A key is
scoped to named functions, may expire, and is revoked rather than deleted so a caller still
holding it is told "revoked", not "unknown".

The ring lives in memory (loaded once at start, written through on create/revoke): the request
path never queries SQLite. Routers get *internal* keys (``router:<fn>:<generation>``) minted by the
gateway and scoped to their stages; users cannot create, revoke or name keys that way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hydro_serving.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from hydro_serving.gateway.state import StateStore
from hydro_serving.stack.model import DNS_LABEL

KEY_PREFIX = "hk_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ID = re.compile(r"^[0-9a-f]{16}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")
_EXPIRES = re.compile(r"^([0-9]+)([smhdw]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_FUNCTIONS = 256


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    """True for anything in the key format (so the gateway never forwards a key, valid or not)."""
    return token.startswith(KEY_PREFIX)


def parse_expires(value: Any) -> float | None:
    """Seconds from ``30d``/``12h``/``15m``/``45s``/``2w`` or a positive integer of seconds; None for never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError("expires must be a duration like '30d', '12h' or a number of seconds", field="expires")
    match = _EXPIRES.match(str(value).strip())
    seconds = int(match.group(1)) * _UNIT[match.group(2)] if match else 0
    if seconds <= 0:
        raise ValidationError(f"expires must be a positive duration like '30d', '12h', '15m', got {value!r}",
                              field="expires")
    return float(seconds)


def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: never holds the secret, only its digest."""

    id: str
    name: str
    digest: str
    functions: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    internal: bool = False

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """What ``GET /system/keys`` shows: everything but the digest."""
        return {"name": self.name, "id": self.id, "functions": list(self.functions),
                "createdAt": _iso(self.created_at), "expiresAt": _iso(self.expires_at),
                "revokedAt": _iso(self.revoked_at), "status": self.state(time.time() if now is None else now),
                "internal": self.internal}

    def row(self) -> tuple[Any, ...]:
        return (self.id, self.name, self.digest, json.dumps(list(self.functions)), self.created_at,
                self.expires_at, self.revoked_at, int(self.internal))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ApiKey:
        return cls(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], row[5], row[6], bool(row[7]))


def _check_functions(functions: Any) -> tuple[str, ...]:
    if not isinstance(functions, list) or not functions:
        raise ValidationError("functions must be a non-empty list of function names", field="functions")
    if len(functions) > MAX_FUNCTIONS:
        raise ValidationError(f"a key names at most {MAX_FUNCTIONS} functions", field="functions")
    for i, fn in enumerate(functions):
        if not isinstance(fn, str) or not DNS_LABEL.match(fn):
            raise ValidationError(f"{fn!r} is not a function name (lower-case letters, digits and '-')",
                                  field=f"functions[{i}]")
    return tuple(dict.fromkeys(functions))


class KeyRing:
    """The gateway's API keys, in memory, written through to the state store."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        self._by_id: dict[str, ApiKey] = {}
        for row in state.all_keys():
            key = ApiKey.from_row(row)
            self._by_id[key.id] = key

    def _by_name(self, name: str) -> ApiKey | None:
        return next((k for k in self._by_id.values() if k.name == name), None)

    def all(self) -> list[ApiKey]:
        return sorted(self._by_id.values(), key=lambda k: k.name)

    # ---- admin ----------------------------------------------------------------------------------

    def create(self, name: Any, functions: Any, expires: Any = None, *, internal: bool = False) -> tuple[ApiKey, str]:
        """A new key and its full token ``hk_<id>_<secret>`` (shown once, never stored)."""
        if not internal and not (isinstance(name, str) and NAME_PATTERN.match(name)):
            raise ValidationError("name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter "
                                  "or digit", field="name")
        scope = _check_functions(functions)
        lifetime = parse_expires(expires)
        now = time.time()
        existing = self._by_name(name)
        if existing is not None and existing.state(now) == "active":
            raise Conflict(f"key '{name}' exists and is active; revoke it first (hydro key revoke {name})",
                           field="name")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(key_id, name, digest(secret), scope, now, None if lifetime is None else now + lifetime,
                     None, internal)
        self._state.put_key(key.row())
        if existing is not None:
            self._by_id.pop(existing.id, None)
        self._by_id[key_id] = key
        return key, f"{KEY_PREFIX}{key_id}_{secret}"

    def revoke(self, name: str, *, internal: bool = False) -> ApiKey:
        key = self._by_name(name)
        if key is None:
            raise NotFound(f"no key named '{name}'", field="name")
        if key.internal and not internal:
            raise BadRequest(f"'{name}' is a router's internal key: redeploying the router rotates it and removing "
                             "the router revokes it", field="name")
        if key.revoked_at is None:
            now = time.time()
            self._state.revoke_key(key.id, now)
            key = ApiKey(key.id, key.name, key.digest, key.functions, key.created_at, key.expires_at, now,
                         key.internal)
            self._by_id[key.id] = key
        return key

    def purge_internal(self) -> None:
        """Forget every router key (at start: the replicas that held them are gone)."""
        for key in [k for k in self._by_id.values() if k.internal]:
            self._state.delete_key(key.id)
            del self._by_id[key.id]

    # ---- the request path -----------------------------------------------------------------------

    def authenticate(self, token: str, function: str) -> ApiKey:
        """The key ``token`` names, if it is genuine, active and scoped to ``function``.

        401 for anything that is not a valid key now (malformed, unknown, wrong secret, expired,
        revoked), 403 for a valid key of other functions; each error says which.
        """
        key_id, _, secret = token[len(KEY_PREFIX):].partition("_")
        if not (_ID.match(key_id) and _SECRET.match(secret)):
            raise Unauthorized("malformed API key: expected hk_<16 hex digits>_<43 characters>", function=function)
        key = self._by_id.get(key_id)
        # compare even when the id is unknown, so the answer's timing says nothing about which ids exist
        expected = key.digest if key is not None else "0" * 64
        genuine = hmac.compare_digest(digest(secret), expected)
        if key is None or not genuine:
            raise Unauthorized("invalid API key", function=function)
        now = time.time()
        if key.revoked_at is not None:
            raise Unauthorized(f"API key '{key.name}' was revoked at {_iso(key.revoked_at)}", function=function)
        if key.expires_at is not None and now >= key.expires_at:
            raise Unauthorized(f"API key '{key.name}' expired at {_iso(key.expires_at)}", function=function)
        if function not in key.functions:
            raise Forbidden(f"API key '{key.name}' is not valid for function '{function}' (it is valid for: "
                            f"{', '.join(key.functions)})", function=function)
        return key
