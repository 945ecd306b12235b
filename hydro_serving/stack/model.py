"""Typed objects for a parsed stack: the rest of the code never touches raw YAML dictionaries.

``FunctionSpec.to_dict()`` is the canonical JSON form of a function: the gateway stores it, the
runtime reads it (``HYDRO_FUNCTION_SPEC``), and ``FunctionSpec.from_dict`` validates it with the
same JSON Schema as stack.yml, so there is one definition of a function everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hydro_serving.contract import ContractError, Signature
from hydro_serving.errors import NotFound, StackError, ValidationError
from hydro_serving.stack.schema import raise_first, schema_errors

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
class Monitoring:
    """``monitoring:`` of a function (hydro_serving.monitor): sample share, window, alert webhook.

    A window closes every ``window_rows`` sampled rows or ``window_seconds``, whichever comes first;
    ``prediction`` names the output field ground truth is compared with (default: the first output).
    """

    sample: float = 0.0
    window_rows: int = 400
    window_seconds: float = 600.0
    alert: str | None = None
    prediction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sample": self.sample,
                               "window": {"rows": self.window_rows, "time": self.window_seconds}}
        if self.alert:
            out["alert"] = self.alert
        if self.prediction:
            out["prediction"] = self.prediction
        return out

    @classmethod
    def from_raw(cls, raw: Any) -> Monitoring:
        """From the schema-checked mapping of stack.yml (``window: 400`` is ``window: {rows: 400}``)."""
        window = raw.get("window")
        window = {"rows": window} if isinstance(window, int) else (window or {})
        return cls(sample=float(raw.get("sample", 0.0)), window_rows=int(window.get("rows", 400)),
                   window_seconds=parse_duration(window.get("time", 600.0)), alert=raw.get("alert"),
                   prediction=raw.get("prediction"))


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
class Streaming:
    """``streaming:`` of a function: consume ``in``, answer to ``out``, failures to ``errors`` (Kafka topics).

    Only the stream worker reads it (hydro_serving/stream); the gateway just stores it with the spec.
    """

    in_topic: str
    out_topic: str
    errors_topic: str
    group: str
    concurrency: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"in": self.in_topic, "out": self.out_topic, "errors": self.errors_topic, "group": self.group,
                "concurrency": self.concurrency}

    @classmethod
    def from_raw(cls, function: str, raw: Any) -> Streaming:
        """From the schema-checked mapping; the consumer group defaults to ``hydro-<function>``."""
        return cls(raw["in"], raw["out"], raw["errors"], raw.get("group") or f"hydro-{function}",
                   int(raw.get("concurrency", 1)))


DEFAULT_ASYNC_RETRIES = 10
DEFAULT_ASYNC_BACKOFF = (1.0, 120.0)
DEFAULT_ASYNC_RETENTION = 24 * 3600.0


@dataclass(frozen=True)
class AsyncPolicy:
    """``async:`` of a function: how the gateway's async queue retries its calls and keeps their results.

    ``retries`` more attempts after the first (then the call is dead-lettered), waits drawn with full
    jitter from ``backoff_min * 2**n`` capped at ``backoff_max``; results are kept ``retention`` seconds.
    ``callback_retries`` is the same for delivering the result to ``X-Callback-Url`` (default: ``retries``).
    """

    retries: int = DEFAULT_ASYNC_RETRIES
    backoff_min: float = DEFAULT_ASYNC_BACKOFF[0]
    backoff_max: float = DEFAULT_ASYNC_BACKOFF[1]
    retention: float = DEFAULT_ASYNC_RETENTION
    callback_retries: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"retries": self.retries, "backoff": f"{self.backoff_min:g}s..{self.backoff_max:g}s",
                               "retention": self.retention}
        if self.callback_retries is not None:
            out["callback_retries"] = self.callback_retries
        return out


def parse_backoff(value: str) -> tuple[float, float]:
    """``"1s..2m"`` -> (1.0, 120.0); ValueError with the reason otherwise."""
    low, sep, high = str(value).strip().partition("..")
    if not sep:
        raise ValueError(f"must be MIN..MAX such as 1s..2m, got {value!r}")
    try:
        pair = parse_duration(low.strip()), parse_duration(high.strip())
    except ValueError:
        raise ValueError(f"must be MIN..MAX durations such as 1s..2m or 250ms..10s, got {value!r}") from None
    if pair[0] <= 0 or pair[1] < pair[0]:
        raise ValueError(f"needs 0 < MIN <= MAX, got {value!r}")
    return pair


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
    auth: str | None = None  # "key": callers need an API key for it even without --auth-functions
    streaming: Streaming | None = None
    monitoring: Monitoring | None = None
    async_policy: AsyncPolicy | None = None  # ``async:`` in stack.yml (a keyword in Python)

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
        if self.auth is not None:
            out["auth"] = self.auth
        if self.streaming is not None:
            out["streaming"] = self.streaming.to_dict()
        if self.monitoring is not None:
            out["monitoring"] = self.monitoring.to_dict()
        if self.async_policy is not None:
            out["async"] = self.async_policy.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "function") -> FunctionSpec:
        """Validate (same schema as stack.yml) and build; ``data['name']`` names the function."""
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
    # ed25519 public keys whose signed models may load: 'ed25519:BASE64' or .pub paths (made absolute)
    trusted_keys: tuple[str, ...] = ()


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


# ---- building typed objects (here, beside them, so that from_dict needs no other module) -------


def _strings(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in (mapping or {}).items():
        out[str(key)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _without_path(message: str, field: str | None) -> str:
    """A contract message without the key path it starts with: the stack error puts the full path first.

    ``signature.inputs[1].nullable: a missing value ...`` would otherwise read
    ``functions.iris.signature.inputs[1].nullable: signature.inputs[1].nullable: a missing value ...``.
    """
    if field and message.startswith(field):
        rest = message[len(field):]
        if rest[:1] in (":", " "):
            return rest.lstrip(": ") or message
    return message


def build_function(name: str, raw: Mapping[str, Any], prefix: tuple[str, ...],
                    lines: dict[tuple[str, ...], int]) -> FunctionSpec:
    def fail(sub: tuple[str, ...], message: str) -> None:
        raise_first([(sub, message)], prefix, lines)

    if not DNS_LABEL.match(name):
        raise_first([((), f"function name '{name}' must be a DNS label: lowercase letters, digits and '-', "
                            "starting and ending with a letter or digit, at most 63 characters")], prefix, lines)
    scale_raw = raw.get("scale") or {}
    scale = Scale(
        min=scale_raw.get("min", 0),
        max=scale_raw.get("max", max(4, scale_raw.get("min", 0))),
        idle=parse_duration(scale_raw.get("idle", DEFAULT_IDLE_SECONDS)),
        concurrency=scale_raw.get("concurrency", 8),
        queue=scale_raw.get("queue", DEFAULT_QUEUE),
    )
    if scale.max < scale.min:
        fail(("scale", "max"), f"scale.max ({scale.max}) must be at least scale.min ({scale.min})")
    limits = _strings(raw.get("limits"))
    if "body" in limits:
        try:
            limits["body"] = str(parse_size(limits["body"]))
        except ValueError:
            fail(("limits", "body"), f"must be a size such as 10Mi or 1048576, got {limits['body']!r}")
    rate = None
    if raw.get("rate") is not None:
        rate_raw = raw["rate"]
        rps = float(rate_raw["rps"])
        rate = Rate(rps=rps, burst=int(rate_raw.get("burst", max(1, math.ceil(rps)))),
                    per=rate_raw.get("per", "key"))
    signature = None
    if raw.get("signature") is not None:
        try:
            signature = Signature.from_dict(raw["signature"])
        except (ContractError, ValidationError) as exc:
            sub = tuple(exc.field.replace("[", ".").replace("]", "").split(".")) if exc.field else ("signature",)
            fail(sub, _without_path(exc.message, exc.field))
    chain: tuple[Stage, ...] = ()
    if raw.get("chain") is not None:
        if raw["lang"] != "router":
            fail(("chain",), "chain is only allowed on functions with lang: router")
        stages = []
        for i, stage_raw in enumerate(raw["chain"]):
            stage = Stage.from_raw(stage_raw)
            if stage.is_experiment or (isinstance(stage_raw, Mapping) and "variants" in stage_raw):
                total = sum(w for _, w in stage.variants)
                if total != 100:
                    fail(("chain", str(i), "variants"), f"variant weights must sum to 100, they sum to {total}")
            for fn in [*stage.functions, *stage.shadow]:
                if not DNS_LABEL.match(fn):
                    fail(("chain", str(i)), f"'{fn}' is not a valid function name")
                if fn == name:
                    fail(("chain", str(i)), f"router '{name}' cannot call itself")
            stages.append(stage)
        chain = tuple(stages)
    elif raw["lang"] == "router":
        fail(("lang",), "a function with lang: router needs a chain")
    batching_raw = raw.get("batching") or {}
    streaming = Streaming.from_raw(name, raw["streaming"]) if raw.get("streaming") is not None else None
    if streaming is not None and streaming.in_topic in (streaming.out_topic, streaming.errors_topic):
        fail(("streaming", "in"), f"streaming.in ('{streaming.in_topic}') must differ from streaming.out and "
                                  "streaming.errors: the function would consume its own answers")
    async_policy = None
    if raw.get("async") is not None:
        async_raw = raw["async"]
        backoff = DEFAULT_ASYNC_BACKOFF
        if async_raw.get("backoff") is not None:
            try:
                backoff = parse_backoff(async_raw["backoff"])
            except ValueError as exc:
                fail(("async", "backoff"), str(exc))
        async_policy = AsyncPolicy(
            retries=int(async_raw.get("retries", DEFAULT_ASYNC_RETRIES)), backoff_min=backoff[0],
            backoff_max=backoff[1], retention=parse_duration(async_raw.get("retention", DEFAULT_ASYNC_RETENTION)),
            callback_retries=async_raw.get("callback_retries"))
    return FunctionSpec(
        name=name,
        lang=raw["lang"],
        handler=raw.get("handler"),
        image=raw.get("image"),
        environment=_strings(raw.get("environment")),
        environment_file=tuple(raw.get("environment_file") or ()),
        secrets=tuple(raw.get("secrets") or ()),
        labels=_strings(raw.get("labels")),
        annotations=_strings(raw.get("annotations")),
        limits=limits,
        requests=_strings(raw.get("requests")),
        build_args=_strings(raw.get("build_args")),
        build_options=tuple(raw.get("build_options") or ()),
        skip_build=bool(raw.get("skip_build", False)),
        namespace=raw.get("namespace"),
        constraints=tuple(raw.get("constraints") or ()),
        readonly_root_filesystem=bool(raw.get("readonly_root_filesystem", False)),
        model=raw.get("model"),
        scale=scale,
        rate=rate,
        timeout=parse_duration(raw.get("timeout", DEFAULT_TIMEOUT_SECONDS)),
        batching=Batching(
            max_batch_size=batching_raw.get("max_batch_size", 1),
            max_batch_delay_ms=float(batching_raw.get("max_batch_delay_ms", 2.0 if batching_raw else 0.0)),
        ),
        options=dict(raw.get("options") or {}),
        signature=signature,
        chain=chain,
        auth=raw.get("auth"),
        streaming=streaming,
        monitoring=Monitoring.from_raw(raw["monitoring"]) if raw.get("monitoring") is not None else None,
        async_policy=async_policy,
    )


def function_from_dict(data: Any, where: str = "function") -> FunctionSpec:
    """Validate one function's canonical JSON (as the gateway receives it) and build it."""
    if not isinstance(data, Mapping):
        raise StackError(f"{where} must be a JSON object", field=where)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise StackError("name is required and must be a string", field="name")
    body = {k: v for k, v in data.items() if k != "name"}
    raise_first(schema_errors(body, "#/$defs/function"), (), {})
    return build_function(name, body, (), {})
