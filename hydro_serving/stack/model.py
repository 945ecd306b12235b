"""Typed objects for a parsed stack: the rest of the code never touches raw YAML dictionaries.

``FunctionSpec.to_dict()`` is the canonical JSON form of a function: the gateway stores it, the
runtime reads it (``HYDRO_FUNCTION_SPEC``), and ``FunctionSpec.from_dict`` validates it with the
same JSON Schema as stack.yml, so there is one definition of a function everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

DEFAULT_IDLE_SECONDS = 300.0
DEFAULT_TIMEOUT_SECONDS = 60.0

DEFAULT_QUEUE = 256  # requests a function may hold while it has no ready replica (beyond: 429)

_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMG]i?[Bb]?|[Bb])?$")
_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "KI": 1024, "MI": 1024**2, "GI": 1024**3}
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``300``, ``"30s"``, ``"5m"``, ``"250ms"`` (the schema has checked the form)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"10Mi"``, ``"512KiB"``, ``"1MB"`` (K/M/G are powers of 1000, Ki/Mi/Gi of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError(f"not a size: {value!r}")
    unit = (match.group(2) or "").upper().removesuffix("B")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class Scale:
    min: int = 0
    max: int = 4
    idle: float = DEFAULT_IDLE_SECONDS
    concurrency: int = 8
    queue: int = DEFAULT_QUEUE  # requests held while no replica is ready; beyond it a 429

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min": self.min, "max": self.max, "idle": self.idle, "concurrency": self.concurrency}
        if self.queue != DEFAULT_QUEUE:  # only when set: stored specs of older versions keep their fingerprint
            out["queue"] = self.queue
        return out


@dataclass(frozen=True)
class Rate:
    """``rate:`` in stack.yml: ``rps`` tokens a second into a bucket of ``burst``, one bucket ``per`` caller."""

    rps: float
    burst: int
    per: str = "key"

    def to_dict(self) -> dict[str, Any]:
        return {"rps": self.rps, "burst": self.burst, "per": self.per}


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 1
    max_batch_delay_ms: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1

    def to_dict(self) -> dict[str, Any]:
        return {"max_batch_size": self.max_batch_size, "max_batch_delay_ms": self.max_batch_delay_ms}


@dataclass(frozen=True)
class Stage:
    """One step of a router chain: a function, or an experiment over weighted variants."""

    variants: tuple[tuple[str, int], ...]  # ((function, weight), ...); one entry of 100 for a plain stage
    shadow: tuple[str, ...] = ()
    timeout: float | None = None

    @property
    def is_experiment(self) -> bool:
        return len(self.variants) > 1

    @property
    def functions(self) -> list[str]:
        return [name for name, _ in self.variants]

    @property
    def label(self) -> str:
        """A readable name for messages: the function, or ``a|b`` for an experiment."""
        return "|".join(self.functions)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"variants": dict(self.variants)}
        if self.shadow:
            out["shadow"] = list(self.shadow)
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out

    @classmethod
    def from_raw(cls, raw: Any) -> Stage:
        if isinstance(raw, str):
            return cls(((raw, 100),))
        timeout = parse_duration(raw["timeout"]) if raw.get("timeout") is not None else None
        shadow = tuple(raw.get("shadow") or ())
        if "function" in raw:
            return cls(((raw["function"], 100),), shadow, timeout)
        return cls(tuple((str(k), int(v)) for k, v in raw["variants"].items()), shadow, timeout)


@dataclass(frozen=True)
class FunctionSpec:
    """A function as declared in stack.yml (paths still relative to the stack's directory)."""

    name: str
    lang: str
    handler: str | None = None
    image: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    environment_file: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    build_args: dict[str, str] = field(default_factory=dict)
    build_options: tuple[str, ...] = ()
    skip_build: bool = False
    namespace: str | None = None
    constraints: tuple[str, ...] = ()
    readonly_root_filesystem: bool = False
    model: str | None = None
    scale: Scale = field(default_factory=Scale)
    rate: Rate | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    batching: Batching = field(default_factory=Batching)
    options: dict[str, Any] = field(default_factory=dict)
    signature: Signature | None = None
    chain: tuple[Stage, ...] = ()

    # ---- helpers -------------------------------------------------------------------------------

    @property
    def is_router(self) -> bool:
        return self.lang == "router"

    @property
    def body_limit(self) -> int | None:
        """``limits.body`` in bytes (the schema and the loader have checked its form), else None."""
        raw = self.limits.get("body")
        return parse_size(raw) if raw is not None else None

    @property
    def model_is_local(self) -> bool:
        """A local path (for development) rather than a store reference ``name[:version|alias]``."""
        return is_local_model_ref(self.model)

    def resolved(self, root: Path) -> FunctionSpec:
        """A copy whose handler folder and local model path are absolute, relative to ``root``."""
        handler = self.handler
        if handler is not None:
            handler = str((root / handler).resolve())
        model = self.model
        if model is not None and self.model_is_local:
            model = str((root / model.removeprefix("file://")).resolve())
        env_files = tuple(str((root / p).resolve()) for p in self.environment_file)
        return replace(self, handler=handler, model=model, environment_file=env_files)

    # ---- canonical JSON ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "lang": self.lang}
        for key in ("handler", "image", "model", "namespace"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key in ("environment", "labels", "annotations", "limits", "requests", "build_args", "options"):
            value = getattr(self, key)
            if value:
                out[key] = dict(value)
        for key in ("environment_file", "secrets", "build_options", "constraints"):
            value = getattr(self, key)
            if value:
                out[key] = list(value)
        if self.skip_build:
            out["skip_build"] = True
        if self.readonly_root_filesystem:
            out["readonly_root_filesystem"] = True
        out["scale"] = self.scale.to_dict()
        if self.rate is not None:
            out["rate"] = self.rate.to_dict()
        out["timeout"] = self.timeout
        if self.batching.enabled:
            out["batching"] = self.batching.to_dict()
        if self.signature is not None:
            out["signature"] = self.signature.to_dict()
        if self.chain:
            out["chain"] = [stage.to_dict() for stage in self.chain]
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "function") -> FunctionSpec:
        """Validate (same schema as stack.yml) and build; ``data['name']`` names the function."""
        from hydro_serving.stack.loader import function_from_dict

        return function_from_dict(data, where)


def is_local_model_ref(model: str | None) -> bool:
    if not model:
        return False
    return model.startswith(("./", "../", "/", "~", "file://")) or model in (".", "..")


@dataclass(frozen=True)
class Provider:
    name: str = "hydro"
    gateway: str | None = None
    network: str | None = None
    store: str | None = None


@dataclass(frozen=True)
class Stack:
    """A whole stack file: provider settings and functions, in file order."""

    path: Path
    version: str
    provider: Provider
    functions: dict[str, FunctionSpec]

    @property
    def root(self) -> Path:
        return self.path.parent

    def function(self, name: str) -> FunctionSpec:
        from hydro_serving.errors import NotFound

        try:
            return self.functions[name]
        except KeyError:
            known = ", ".join(self.functions) or "none"
            raise NotFound(f"no function '{name}' in {self.path.name} (functions: {known})",
                           function=name) from None

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[FunctionSpec]:
        """The functions named by ``--filter`` (all when empty), each checked to exist."""
        if not names:
            return list(self.functions.values())
        return [self.function(name) for name in names]
