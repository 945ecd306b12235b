"""Admin sessions of the web UI: login against the gateway's credentials, cookie, CSRF, rate limit.

Why server-side sessions (a random id in an ``HttpOnly; SameSite=Strict`` cookie, ``Secure`` over TLS)
rather than the bearer token in the browser: the token never reaches page scripts, a logout really
ends the session, and sessions die with the gateway process. Each session carries its own CSRF
token, which every form posts back (compared in constant time); the login form, which has no session
yet, uses a double-submit token (a pre-login cookie equal to a hidden field).

The password is the one in the gateway's ``credentials.json`` (user ``admin``): the same secret
``hydro`` prints for basic auth, checked by :meth:`Credentials.matches` (constant time).
Failed and successful logins alike draw from a token bucket per client address
(:class:`~hydro_serving.gateway.ratelimit.RateLimiter`), so the password cannot be guessed quickly.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from hydro_serving.errors import BadRequest, Forbidden, TooManyRequests, Unauthorized
from hydro_serving.gateway.auth import Credentials, Presented
from hydro_serving.gateway.ratelimit import PER_IP, RateLimiter, RatePolicy

COOKIE = "hydro_ui"
LOGIN_COOKIE = "hydro_ui_login"  # double-submit CSRF token of the login form
CSRF_FIELD = "csrf"
SESSION_IDLE = 8 * 3600.0  # seconds without a request before a session ends
SESSION_MAX = 24 * 3600.0  # and at most this long whatever
MAX_SESSIONS = 1000  # oldest dropped beyond this: memory stays bounded whatever callers do
LOGIN_POLICY = RatePolicy(rps=0.2, burst=5, per=PER_IP)  # 5 tries, then one every 5 s per address
MAX_PASSWORD = 256


@dataclass
class Session:
    id: str
    csrf: str
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)


def is_secure(request: web.Request) -> bool:
    """Served over TLS (directly, or by a proxy that says so): the cookie then gets ``Secure``."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def cookie_options(request: web.Request, max_age: int | None = None) -> dict:
    options = {"httponly": True, "samesite": "Strict", "path": "/ui", "secure": is_secure(request)}
    if max_age is not None:
        options["max_age"] = max_age
    return options


class Sessions:
    """The live sessions of one gateway (in memory: a restarted gateway logs everybody out)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.limiter = RateLimiter(max_buckets=10_000)

    # ---- login ------------------------------------------------------------------------------------

    def check_password(self, user: str, password: str) -> bool:
        """True for the admin user and password of the gateway's credentials (constant-time compare)."""
        if len(password) > MAX_PASSWORD or len(user) > MAX_PASSWORD:
            return False
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        return self.credentials.matches(Presented("basic", raw))

    def admit_login(self, client: str | None) -> None:
        """Draw one login attempt from the caller's bucket; 429 (with Retry-After) when it is empty."""
        decision = self.limiter.take("ui-login", LOGIN_POLICY, RateLimiter.identity(LOGIN_POLICY, None, client))
        if not decision.allowed:
            wait = max(1, round(decision.retry_after))
            raise TooManyRequests(f"too many login attempts; retry in {wait} s", retry_after=wait)

    def create(self) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    # ---- per request ------------------------------------------------------------------------------

    def current(self, request: web.Request) -> Session | None:
        """The request's live session, or None (no cookie, unknown, idle or too old)."""
        sid = request.cookies.get(COOKIE)
        if not sid or len(sid) > 100:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > SESSION_IDLE or now - session.created > SESSION_MAX:
            self.drop(sid)
            return None
        session.seen = now
        self._sessions.move_to_end(sid)
        return session

    def require(self, request: web.Request) -> Session:
        session = self.current(request)
        if session is None:
            raise Unauthorized("log in to the web UI first (POST /ui/login)")
        return session

    def __len__(self) -> int:
        return len(self._sessions)


def check_origin(request: web.Request) -> None:
    """A cross-site form post (an ``Origin`` that is not this host) is refused before its token is read."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    host = request.headers.get("Host", "")
    if origin.split("://", 1)[-1] != host:
        raise BadRequest("cross-origin form posts are refused", field="Origin")


def check_csrf(expected: str, form: dict | web.MultiDictProxy) -> None:
    """Refuse a form whose CSRF token is missing or not the session's (403 naming ``csrf``)."""
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the form's CSRF token is missing or stale; reload the page and submit it again",
                        field=CSRF_FIELD)
