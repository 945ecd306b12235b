"""Runtime limits, read from the environment once per server (never at import time).

The limits live in the environment rather than in stack.yml so that an operator can tighten a
function's body size or concurrency at deploy time without rebuilding its image; ``HYDRO_TIMEOUT``
overrides the spec's ``timeout`` for the same reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from hydro_serving.errors import ConfigError
from hydro_serving.stack.model import FunctionSpec, parse_duration

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_INFLIGHT = 64
DEFAULT_LOAD_FAILURE_EXIT_AFTER = 3.0


@dataclass(frozen=True)
class RuntimeConfig:
    """What the HTTP layer enforces around every invocation."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    timeout: float = 60.0
    # Seconds a worker keeps answering /_/ready 503 (with the cause) after the model failed to load,
    # before it exits with gunicorn's "worker failed to boot" status; None keeps it serving 503 forever.
    load_failure_exit_after: float | None = DEFAULT_LOAD_FAILURE_EXIT_AFTER

    @classmethod
    def from_env(cls, spec: FunctionSpec, env: Mapping[str, str] | None = None) -> RuntimeConfig:
        """Limits from HYDRO_MAX_BODY_BYTES, HYDRO_MAX_INFLIGHT, HYDRO_TIMEOUT and HYDRO_LOAD_FAILURE_EXIT."""
        env = os.environ if env is None else env
        timeout = spec.timeout
        if env.get("HYDRO_TIMEOUT"):
            try:
                timeout = parse_duration(env["HYDRO_TIMEOUT"])
            except ValueError:
                raise ConfigError(f"HYDRO_TIMEOUT must be a duration such as 30s or 500ms, got "
                                  f"{env['HYDRO_TIMEOUT']!r}", field="HYDRO_TIMEOUT") from None
        if not timeout > 0 or math.isinf(timeout):
            raise ConfigError(f"the timeout must be a positive duration, got {timeout}", field="timeout")
        exit_after: float | None = DEFAULT_LOAD_FAILURE_EXIT_AFTER
        raw_exit = env.get("HYDRO_LOAD_FAILURE_EXIT", "").strip()
        if raw_exit == "never":
            exit_after = None
        elif raw_exit:
            try:
                exit_after = parse_duration(raw_exit)
            except ValueError:
                raise ConfigError(f"HYDRO_LOAD_FAILURE_EXIT must be a duration or 'never', got {raw_exit!r}",
                                  field="HYDRO_LOAD_FAILURE_EXIT") from None
        return cls(
            # the function's limits.body (the gateway enforces the same) unless the operator set the variable
            max_body_bytes=_positive_int(env, "HYDRO_MAX_BODY_BYTES", spec.body_limit or DEFAULT_MAX_BODY_BYTES),
            max_inflight=_positive_int(env, "HYDRO_MAX_INFLIGHT", DEFAULT_MAX_INFLIGHT),
            timeout=timeout,
            load_failure_exit_after=exit_after,
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}", field=name)
    return value
