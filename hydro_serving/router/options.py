"""The router's tunables, read from its spec's ``options`` (stack.yml) and checked strictly.

``options`` is free-form in the schema because each kind of function reads its own; the router
refuses keys it does not know, naming ``options.<key>``, so a misspelt threshold is an error at
deploy/load instead of a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hydro_serving.errors import ConfigError
from hydro_serving.router.contracts import STAGE_SIGNATURES_OPTION
from hydro_serving.stack.model import parse_duration


@dataclass(frozen=True)
class RouterOptions:
    breaker_failures: int = 5  # consecutive failures that open a stage's breaker
    breaker_cooldown: float = 10.0  # seconds open before one probe is let through
    connect_retries: int = 2  # extra attempts when a connection could not be opened
    retry_backoff: float = 0.05  # first backoff; doubles per retry
    retry_max_backoff: float = 0.5
    connect_timeout: float = 2.0
    prewarm: bool = True  # start later stages' replicas in parallel when they may be cold
    warm_ttl: float = 15.0  # a stage that answered within this many seconds is assumed warm
    shadow_workers: int = 2
    shadow_queue: int = 64  # shadow copies waiting beyond this are dropped (and counted)
    shadow_timeout: float | None = None  # default: the stage's timeout, else the router's
    pool_size: int = 16  # keep-alive connections to the gateway
    max_stage_response: int = 10 * 1024 * 1024  # bytes of a stage's answer the router reads (else 502)
    deadline_margin: float = 0.05  # seconds kept back to answer a 504 before the caller gives up
    direct: bool = True  # call warm stage replicas directly when the gateway allows it (local provider)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str = "options") -> RouterOptions:
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {}
        for key, raw in options.items():
            if key == STAGE_SIGNATURES_OPTION:
                continue
            if key not in known:
                allowed = ", ".join(sorted([*known, STAGE_SIGNATURES_OPTION]))
                raise ConfigError(f"unknown router option '{key}' (allowed: {allowed})", field=f"{where}.{key}")
            values[key] = _coerce(key, raw, cls.__dataclass_fields__[key].type, f"{where}.{key}")
        return cls(**values)


def _coerce(key: str, raw: Any, kind: Any, where: str) -> Any:
    kind = str(kind)
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(f"{where} must be true or false, got {raw!r}", field=where)
        return raw
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < (0 if key == "connect_retries" else 1):
            raise ConfigError(f"{where} must be a positive integer, got {raw!r}", field=where)
        return raw
    if raw is None and "None" in kind:
        return None
    try:
        value = parse_duration(raw)
    except (ValueError, TypeError):
        raise ConfigError(f"{where} must be a duration (seconds, or like '250ms', '10s'), got {raw!r}",
                          field=where) from None
    if value < 0:
        raise ConfigError(f"{where} must not be negative", field=where)
    return value
