"""The one exception hierarchy of Hydro Serving, and the one place it becomes HTTP.

Every part raises a subclass of :class:`HydroError`; each class carries its HTTP status and a
stable machine-readable ``code``. Servers (the Flask runtime, the aiohttp gateway) turn any
exception into a response with :func:`http_error`, so a caller always gets JSON that names
what is wrong (``field``, ``stage``, ``function``) and never a traceback. The CLI turns the same
exceptions into a one-line message and a non-zero exit.
"""

from __future__ import annotations

from typing import Any


class HydroError(Exception):
    """Base of every error the platform raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        stage: str | None = None,
        function: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.stage = stage
        self.function = function
        self.details = details or {}
        self.headers = headers or {}
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        """The JSON body: ``error`` is the human message (V2-compatible), the rest locate it."""
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        for key in ("field", "stage", "function"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.details:
            body["details"] = self.details
        return body

    def __str__(self) -> str:
        return self.message


# ---- 4xx: the caller's fault -------------------------------------------------------------


class BadRequest(HydroError):
    status = 400
    code = "bad_request"


class ValidationError(BadRequest):
    """Input does not match a declared signature or schema; ``field`` names the culprit."""

    code = "invalid_input"


class StackError(BadRequest):
    """stack.yml is wrong; ``field`` is the key path and ``details['line']`` the line when known."""

    code = "invalid_stack"


class Unauthorized(HydroError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "credentials required", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Basic realm="hydro"'})
        super().__init__(message, **kw)


class Forbidden(HydroError):
    status = 403
    code = "forbidden"


class UntrustedModelError(Forbidden):
    """A model the trust policy refuses: unsigned, signed by another key, not the pinned bytes, discovered pickle."""

    code = "untrusted_model"


class NotFound(HydroError):
    status = 404
    code = "not_found"


class MethodNotAllowed(HydroError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(HydroError):
    """The caller did not send its request (headers or body) within the server's read timeout."""

    status = 408
    code = "request_timeout"


class Conflict(HydroError):
    status = 409
    code = "conflict"


class PayloadTooLarge(HydroError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HydroError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(HydroError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float = 1, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(max(1, round(retry_after)))})
        super().__init__(message, **kw)


# ---- 5xx: ours, or a function's --------------------------------------------------------------


class InternalError(HydroError):
    status = 500
    code = "internal_error"


class HandlerError(HydroError):
    """User code (a template's predict or a custom handle) raised; details stay in the log."""

    status = 500
    code = "handler_error"


class UpstreamError(HydroError):
    """A replica or stage failed (connection lost, crashed, answered garbage)."""

    status = 502
    code = "bad_gateway"


class ServiceUnavailable(HydroError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: float | None = None, **kw: Any) -> None:
        if retry_after is not None:
            kw.setdefault("headers", {"Retry-After": str(max(1, round(retry_after)))})
        super().__init__(message, **kw)


class InsufficientStorage(HydroError):
    """A disk the platform writes to (the gateway's state directory) is full; nothing was changed."""

    status = 507
    code = "insufficient_storage"


class DeadlineExceeded(HydroError):
    status = 504
    code = "timeout"


# ---- errors that never travel over HTTP but share the hierarchy for the CLI --------------------


class ConfigError(HydroError):
    """Local configuration (environment, flags, files) is wrong."""

    status = 400
    code = "config_error"


class StoreError(HydroError):
    """The model store failed: unreachable endpoint, credentials, corrupt object."""

    status = 502
    code = "store_error"


class MissingExtra(ConfigError):
    """An optional dependency is not installed; the message says which extra brings it."""

    code = "missing_extra"


def require_extra(module: str, extra: str) -> Any:
    """Import an optional dependency or raise a friendly :class:`MissingExtra`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"the Python package '{module}' is not installed; install it with: pip install 'hydro-serving[{extra}]'"
        ) from exc


def http_error(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Map any exception to ``(status, json_body, headers)``: the one exception-to-HTTP mapping.

    Unknown exceptions become a generic 500 without their text, because their text may hold
    internals (paths, values) that a caller must not see; the caller of this function logs them.
    """
    if isinstance(exc, HydroError):
        return exc.status, exc.to_dict(), dict(exc.headers)
    return 500, {"error": "internal error", "code": "internal_error"}, {}
