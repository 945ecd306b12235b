"""The pipeline engine: one request through the chain, stage by stage, via the gateway or straight to replicas.

Per request the router

1. fixes its deadline (``X-Timeout``, else the router's timeout) and its trace (``traceparent``);
2. validates the input against stage 1's signature (400 naming the field, before any call);
3. plans the route: one variant per experiment, by cumulative weight (sticky per ``X-Hydro-Key``);
4. fails fast with 503 if a chosen stage's circuit breaker is open;
5. asks the gateway to start later stages that may be cold, in parallel, without waiting;
6. posts the raw body to stage 1, stage 1's raw reply to stage 2, ... and returns the last reply
   byte for byte, with ``X-Hydro-Stage-Timings`` and ``traceparent`` headers (a stage call goes
   straight to a warm replica when the router runs beside its stages: :mod:`hydro_serving.router.direct`);
7. hands shadow copies of each stage's input to a bounded background pool, never waited for.

Every failure is a :class:`HydroError` naming the stage (``stage`` = the function, the position
in ``details.stage_index``): a stage's 4xx keeps its status and body, a stage failure or lost
connection is 502, a timeout 504, an open breaker 503 with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from hydro_serving import telemetry
from hydro_serving.contract import Signature
from hydro_serving.errors import (
    DeadlineExceeded,
    HydroError,
    ServiceUnavailable,
    UpstreamError,
    ValidationError,
)
from hydro_serving.replica import contract
from hydro_serving.router.breaker import BreakerBoard
from hydro_serving.router.client import RetryPolicy, StageCallError, StageClient, StageReply
from hydro_serving.router.contracts import first_stage_signature, pipeline_signature, signatures_from_options
from hydro_serving.router.deadline import Deadline
from hydro_serving.router.direct import DirectPaths
from hydro_serving.router.metrics import RouterMetrics
from hydro_serving.router.options import RouterOptions
from hydro_serving.router.tracing import TraceContext, incoming_trace
from hydro_serving.router.variants import choose_variant
from hydro_serving.stack.model import FunctionSpec, Stage

log = logging.getLogger(__name__)

TIMINGS_HEADER = contract.TIMINGS_HEADER
PIPELINE_HEADER = contract.PIPELINE_HEADER
STAGE_HEADER = contract.STAGE_HEADER
SHADOW_HEADER = contract.SHADOW_HEADER
KEY_HEADER = contract.KEY_HEADER
# headers of the caller that every stage should see too
FORWARDED = ("tracestate", contract.KEY_HEADER, "accept", "authorization", "x-request-id", "x-hydro-monitor")
_PREWARM_MIN_INTERVAL = 5.0
_MAX_ERROR_TEXT = 2000


@dataclass
class PipelineResult:
    """The last stage's reply, as is, plus the router's headers."""

    body: bytes
    status: int
    content_type: str
    headers: dict[str, str]


@dataclass(frozen=True)
class PlannedStage:
    index: int  # 1-based position in the chain
    stage: Stage
    function: str  # the chosen variant


class Router:
    """Runs one router spec; thread-safe, built once per replica at load and shared by all requests."""

    def __init__(
        self,
        spec: FunctionSpec,
        gateway_url: str,
        *,
        registry: CollectorRegistry | None = None,
        signatures: Mapping[str, Signature] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        client: StageClient | None = None,
        stage_url_template: str | None = None,
        direct: bool = False,
    ) -> None:
        if not spec.chain:
            raise ValueError(f"function '{spec.name}' has no chain to route")
        self.spec = spec
        self.name = spec.name
        self.options = RouterOptions.from_options(spec.options)
        sigs = dict(signatures) if signatures is not None else signatures_from_options(spec.options, spec.name)
        self.input_signature = first_stage_signature(spec, sigs.get)
        self.signature = pipeline_signature(spec, sigs.get)  # what its V2 metadata advertises
        self._rng = rng or random.Random()
        self._clock = clock
        opts = self.options
        self.client = client or StageClient(
            gateway_url, pool_size=opts.pool_size, connect_timeout=opts.connect_timeout,
            retry=RetryPolicy(opts.connect_retries, opts.retry_backoff, opts.retry_max_backoff),
            url_template=stage_url_template, max_response=opts.max_stage_response,
        )
        # the direct path: only beside the stages (the gateway says so) and unless the spec turns it off
        if direct and opts.direct and stage_url_template is None and self.client.direct is None:
            self.client.direct = DirectPaths(self.client.transport, self.client.key, spec.name,
                                             pool_size=opts.pool_size, max_response=opts.max_stage_response)
        self.breakers = BreakerBoard(opts.breaker_failures, opts.breaker_cooldown, clock)
        self.metrics = RouterMetrics(spec.name, registry)
        self._lock = threading.Lock()
        self._warm_at: dict[str, float] = {}
        self._prewarmed_at: dict[str, float] = {}
        self._shadow_pending = 0
        self._shadow_pool = ThreadPoolExecutor(
            max_workers=opts.shadow_workers, thread_name_prefix=f"{spec.name}-shadow")
        self._prewarm_pool = ThreadPoolExecutor(
            max_workers=max(1, min(8, len(spec.chain) - 1)), thread_name_prefix=f"{spec.name}-prewarm")

    # ---- one request -----------------------------------------------------------------------

    def run(
        self,
        body: bytes,
        headers: Mapping[str, str],
        deadline: float | None = None,
        payload: Any = None,
    ) -> PipelineResult:
        """Route one request; raises HydroError (with the timings so far in its headers) on failure.

        ``payload`` is the already-decoded JSON when the caller has it (saves a parse); ``deadline``
        is the runtime's ``time.monotonic()`` deadline, if any.
        """
        hdr = {str(k).lower(): str(v) for k, v in headers.items()}
        trace = incoming_trace(hdr.get("traceparent")).child()  # the router's own span
        span_start, outcome = telemetry.now_ns(), 500  # TELEMETRY: exported when the pipeline is done
        timings: list[dict[str, Any]] = []
        shadows: list[tuple[PlannedStage, bytes, str]] = []
        started_by_prewarm: dict[str, bool] = {}  # filled by the prewarm threads: this request woke them
        try:
            budget = Deadline.start(hdr, self.spec.timeout, deadline, self.options.deadline_margin, self._clock)
            self._validate_input(body, payload)
            plan = self.plan(hdr.get(KEY_HEADER))
            self._preflight(plan)
            self._prewarm_later(plan, trace, started_by_prewarm)
            data, ctype = body, hdr.get("content-type") or "application/json"
            status = 200
            for step in plan:
                if step.stage.shadow:
                    shadows.append((step, data, ctype))
                reply = self._call_stage(step, data, ctype, budget, trace, hdr, timings, started_by_prewarm)
                data, ctype, status = reply.body, reply.content_type, reply.status
            self.metrics.finished(status)
            outcome = status
            return PipelineResult(data, status, ctype, self._response_headers(trace, timings))
        except HydroError as exc:
            exc.headers = {**exc.headers, **self._response_headers(trace, timings)}
            if exc.function is None:
                exc.function = self.name
            self.metrics.finished(exc.status)
            outcome = exc.status
            raise
        finally:
            if telemetry.enabled():  # TELEMETRY
                parent = telemetry.parse_traceparent(hdr.get("traceparent"))
                telemetry.record(self.name, f"pipeline {self.name}", trace.trace_id, trace.span_id,
                                 parent[1] if parent and parent[0] == trace.trace_id else None, span_start,
                                 attributes={"hydro.pipeline": self.name, "http.response.status_code": outcome,
                                             "hydro.stages": len(timings)}, error=outcome >= 500)
            for step, data_in, ctype_in in shadows:
                self._submit_shadows(step, data_in, ctype_in, trace)

    def plan(self, key: str | None = None) -> list[PlannedStage]:
        """The route of one request: the chosen variant of every stage (only these will run)."""
        return [
            PlannedStage(i, stage, choose_variant(stage.variants, i, key, self._rng))
            for i, stage in enumerate(self.spec.chain, start=1)
        ]

    # ---- before the first call ---------------------------------------------------------------

    def _validate_input(self, body: bytes, payload: Any) -> None:
        if self.input_signature is None:
            return
        if payload is None:
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValidationError(
                    f"the pipeline input must be JSON ({exc.__class__.__name__}: {exc})", field="$",
                    stage=self.spec.chain[0].label) from None
        try:
            self.input_signature.validate_payload(payload)
        except ValidationError as exc:
            exc.stage = exc.stage or self.spec.chain[0].label
            raise

    def _preflight(self, plan: list[PlannedStage]) -> None:
        """Answer 503 at once if any chosen stage's breaker is open: no point running stage 1."""
        for step in plan:
            decision = self.breakers.get(step.function).peek()
            if not decision.allowed:
                self.metrics.stage(step.index, step.function, "breaker_open", None, None)
                raise self._breaker_error(step, decision.retry_after)

    def _breaker_error(self, step: PlannedStage, retry_after: float) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"stage {step.index} ({step.function}) is failing; its circuit breaker is open "
            f"(retry in {retry_after:.1f}s)",
            retry_after=max(retry_after, 1.0), stage=step.function,
            details={"stage_index": step.index, "breaker": "open"},
        )

    def _prewarm_later(self, plan: list[PlannedStage], trace: TraceContext, started: dict[str, bool]) -> None:
        """Start replicas of later stages now, in parallel with stage 1, if they may be cold.

        A stage that answered within ``warm_ttl`` is assumed to still have a replica; otherwise
        one prewarm (the gateway answers 202 at once) per ``min(warm_ttl, 5s)`` at most.
        """
        if not self.options.prewarm or len(plan) < 2 or not self.client.can_prewarm:
            return
        now = self._clock()
        ttl = self.options.warm_ttl
        todo = []
        with self._lock:
            for step in plan[1:]:
                fn = step.function
                if now - self._warm_at.get(fn, -1e18) < ttl:
                    continue
                if now - self._prewarmed_at.get(fn, -1e18) < min(ttl, _PREWARM_MIN_INTERVAL):
                    continue
                self._prewarmed_at[fn] = now
                todo.append(step)
        for step in todo:
            headers = {"traceparent": trace.child().header, PIPELINE_HEADER: self.name, STAGE_HEADER: str(step.index)}
            try:
                self._prewarm_pool.submit(self._send_prewarm, step.function, headers, started)
            except RuntimeError:  # shutting down
                return

    def _send_prewarm(self, function: str, headers: dict[str, str], started: dict[str, bool]) -> None:
        """One prewarm; notes in ``started`` when the gateway had to start a replica (a cold start we hid)."""
        answer = self.client.prewarm(function, headers)
        ok = answer is not None and answer[0] < 300
        self.metrics.prewarm(function, "ok" if ok else "error")
        if ok and answer is not None:
            with contextlib.suppress(ValueError, AttributeError):
                started[function] = json.loads(answer[1]).get("status") == "starting"

    # ---- one stage ---------------------------------------------------------------------------

    def _stage_headers(self, step: PlannedStage, ctype: str, trace: TraceContext, hdr: Mapping[str, str],
                       seconds: float) -> dict[str, str]:
        out = {
            "Content-Type": ctype,
            "traceparent": trace.child().header,
            PIPELINE_HEADER: self.name,
            STAGE_HEADER: str(step.index),
            "X-Timeout": f"{max(seconds, 0.001):.3f}",
        }
        for name in FORWARDED:
            if name in hdr:
                out[name] = hdr[name]
        return out

    def _call_stage(
        self,
        step: PlannedStage,
        data: bytes,
        ctype: str,
        budget: Deadline,
        trace: TraceContext,
        hdr: Mapping[str, str],
        timings: list[dict[str, Any]],
        started_by_prewarm: dict[str, bool] | None = None,
    ) -> StageReply:
        fn, index = step.function, step.index
        allowed = budget.for_stage(step.stage.timeout)
        if allowed <= 0:
            timings.append(self._timing(step, 0.0, None, error="deadline"))
            self.metrics.stage(index, fn, "timeout", None, None)
            raise DeadlineExceeded(
                f"no time left for stage {index} ({fn}): the pipeline's deadline passed",
                stage=fn, details={"stage_index": index})
        breaker = self.breakers.get(fn)
        decision = breaker.acquire()
        if not decision.allowed:
            self.metrics.stage(index, fn, "breaker_open", None, None)
            raise self._breaker_error(step, decision.retry_after)
        stage_deadline = self._clock() + allowed
        started = self._clock()
        stage_headers = self._stage_headers(step, ctype, trace, hdr, allowed)
        span_start = telemetry.now_ns()
        try:
            reply = self.client.post(
                fn, data, stage_headers,
                timeout=lambda: stage_deadline - self._clock(),
                on_retry=lambda _n: self.metrics.retry(fn),
            )
        except StageCallError as err:
            self._stage_span(step, stage_headers, trace, span_start, None, err.kind)
            seconds = self._clock() - started
            if err.kind != "timeout" or self._timeout_is_the_stages(step, budget, allowed):
                breaker.record_failure()
            else:
                breaker.release()
            self.metrics.breaker(fn, breaker.state)
            outcome = "timeout" if err.kind == "timeout" else "connection"
            self.metrics.stage(index, fn, outcome, seconds, None)
            timings.append(self._timing(step, seconds, None, error=err.kind))
            raise self._call_error(step, err, allowed) from None
        if reply.cold_start is not None:
            with self._lock:
                self._warm_at[fn] = self._clock()
        prewarmed = bool(started_by_prewarm and started_by_prewarm.get(fn))
        self._stage_span(step, stage_headers, trace, span_start, reply, None)
        timings.append(self._timing(step, reply.seconds, reply, error=None if reply.status < 300 else reply.status,
                                    prewarmed=prewarmed))
        self._judge_reply(step, reply, breaker, self._timeout_is_the_stages(step, budget, allowed))
        return reply

    @staticmethod
    def _timeout_is_the_stages(step: PlannedStage, budget: Deadline, allowed: float) -> bool:
        """Does running out of ``allowed`` seconds say the stage is slow, or only that the caller was hasty?

        A caller's short ``X-Timeout`` must not let it open a breaker for everybody: a timeout counts only
        when the stage had its own configured ``timeout`` in full, or when nobody shortened the pipeline's.
        """
        own = step.stage.timeout
        if own is not None and allowed >= own - 1e-6:
            return True
        return not budget.caller_shortened
    def _stage_span(self, step: PlannedStage, headers: Mapping[str, str], trace: TraceContext, start_ns: int,
                    reply: StageReply | None, error: str | None) -> None:
        """TELEMETRY: the stage call's span (its id is the one the stage's traceparent carries)."""
        if not telemetry.enabled():
            return
        sent = telemetry.parse_traceparent(headers.get("traceparent"))
        if sent is None:
            return
        status = reply.status if reply is not None else 0
        attributes: dict[str, Any] = {
            "hydro.pipeline": self.name, "hydro.stage": step.index, "hydro.stage_name": step.stage.label,
            "hydro.variant": step.function, "http.response.status_code": status,
            "hydro.cold_start": bool(reply.cold_start) if reply is not None else False}
        if error:
            attributes["hydro.error"] = error
        telemetry.record(self.name, f"stage {step.index} {step.function}", trace.trace_id, sent[1], trace.span_id,
                         start_ns, attributes=attributes, kind="client", error=error is not None or status >= 500)

    def _call_error(self, step: PlannedStage, err: StageCallError, allowed: float) -> HydroError:
        fn, index = step.function, step.index
        details = {"stage_index": index, "cause": err.kind, "reason": err.message, "attempts": err.attempts}
        if err.kind == "timeout":
            return DeadlineExceeded(
                f"stage {index} ({fn}) did not answer within {allowed:.3f}s", stage=fn, details=details)
        if err.kind == "connect":
            return UpstreamError(
                f"stage {index} ({fn}) could not be reached after {err.attempts} attempt(s): {err.message}",
                stage=fn, details=details)
        if err.kind == "too_large":
            return UpstreamError(f"stage {index} ({fn}) answered too much: {err.message}", stage=fn, details=details)
        return UpstreamError(f"stage {index} ({fn}) lost the connection: {err.message}", stage=fn, details=details)

    def _judge_reply(self, step: PlannedStage, reply: StageReply, breaker: Any, timeout_counts: bool = True) -> None:
        """Turn a stage's non-2xx (or garbled 2xx) reply into the pipeline's error; feed the breaker.

        The breaker hears only of faults that are the stage's own (see :mod:`hydro_serving.router.breaker`):
        a 4xx or a handler exception on this input (500 ``handler_error``: the stage is up and answered) is
        the caller's, and so is a 504 when the caller shortened the deadline.
        """
        fn, index, status = step.function, step.index, reply.status
        cold = reply.cold_start
        if 200 <= status < 300:
            if "json" in reply.content_type and reply.body and not _is_json(reply.body):
                breaker.record_failure()
                self.metrics.breaker(fn, breaker.state)
                self.metrics.stage(index, fn, "error", reply.seconds, cold)
                raise UpstreamError(
                    f"stage {index} ({fn}) answered {status} with a body that is not valid JSON",
                    stage=fn, details={"stage_index": index, "status": status, "body": _text(reply.body)})
            breaker.record_success()
            self.metrics.breaker(fn, breaker.state)
            self.metrics.stage(index, fn, "ok", reply.seconds, cold)
            return
        error_body = _error_body(reply.body)
        details: dict[str, Any] = {"stage_index": index, "status": status, "body": error_body}
        stage_message = error_body.get("error") if isinstance(error_body, dict) else None
        cause = f": {stage_message}" if isinstance(stage_message, str) else ""
        if 400 <= status < 500:
            breaker.record_success()  # the stage is alive; the input was wrong
            self.metrics.breaker(fn, breaker.state)
            self.metrics.stage(index, fn, "client_error", reply.seconds, cold)
            exc = HydroError(f"stage {index} ({fn}) refused its input with {status}{cause}", stage=fn,
                             field=error_body.get("field") if isinstance(error_body, dict) else None,
                             details=details, status=status)
            exc.code = "stage_rejected"
            if "retry-after" in reply.headers:
                exc.headers["Retry-After"] = reply.headers["retry-after"]
            raise exc
        input_fault = status == 500 and isinstance(error_body, dict) and error_body.get("code") == "handler_error"
        if input_fault:
            breaker.record_success()  # alive and answering: this input made the handler raise
        elif status == 504 and not timeout_counts:
            breaker.release()
        else:
            breaker.record_failure()
        self.metrics.breaker(fn, breaker.state)
        self.metrics.stage(index, fn, "timeout" if status == 504 else "error", reply.seconds, cold)
        if status == 504:
            raise DeadlineExceeded(f"stage {index} ({fn}) timed out (504){cause}", stage=fn, details=details)
        if status == 503:
            retry = reply.headers.get("retry-after")
            raise ServiceUnavailable(f"stage {index} ({fn}) is unavailable (503){cause}", stage=fn, details=details,
                                     retry_after=_float(retry))
        raise UpstreamError(f"stage {index} ({fn}) failed with {status}{cause}", stage=fn, details=details)

    @staticmethod
    def _timing(step: PlannedStage, seconds: float, reply: StageReply | None, error: Any = None,
                prewarmed: bool = False) -> dict[str, Any]:
        """One entry of X-Hydro-Stage-Timings.

        ``cold_start`` is true when a replica had to be started for this request: the gateway held
        the call (its X-Cold-Start), or this request's prewarm started it (then ``prewarmed`` is
        true too, and ``ms`` shows how much of that start the parallel prewarm hid).
        """
        cold = reply.cold_start if reply is not None else None
        entry: dict[str, Any] = {
            "stage": step.index,
            "name": step.stage.label,
            "variant": step.function,
            "ms": round(seconds * 1000, 1),
            "cold_start": True if prewarmed else cold,
        }
        if prewarmed:
            entry["prewarmed"] = True
        if reply is not None and reply.direct:
            entry["direct"] = True  # the router called the stage's replica itself, not through the gateway
        if reply is not None and reply.queue_ms is not None:
            entry["queue_ms"] = reply.queue_ms
        if error is not None:
            entry["error"] = error
        return entry

    def _response_headers(self, trace: TraceContext, timings: list[dict[str, Any]]) -> dict[str, str]:
        return {TIMINGS_HEADER: json.dumps(timings, separators=(",", ":")), "traceparent": trace.header}

    # ---- shadows -----------------------------------------------------------------------------

    def _submit_shadows(self, step: PlannedStage, data: bytes, ctype: str, trace: TraceContext) -> None:
        for fn in step.stage.shadow:
            with self._lock:
                if self._shadow_pending >= self.options.shadow_queue:
                    full = True
                else:
                    full = False
                    self._shadow_pending += 1
            if full:
                self.metrics.shadow(step.index, fn, "dropped", None)
                log.warning("router %s: shadow queue full, dropped the copy for %s", self.name, fn)
                continue
            try:
                self._shadow_pool.submit(self._run_shadow, step, fn, data, ctype, trace.child())
            except RuntimeError:  # shutting down
                with self._lock:
                    self._shadow_pending -= 1
                self.metrics.shadow(step.index, fn, "dropped", None)

    def _run_shadow(self, step: PlannedStage, fn: str, data: bytes, ctype: str, span: TraceContext) -> None:
        """Call one shadow and record what happened; nothing here can reach the caller."""
        try:
            breaker = self.breakers.get(fn)
            decision = breaker.acquire()
            if not decision.allowed:
                self.metrics.shadow(step.index, fn, "breaker_open", None)
                return
            limit = self.options.shadow_timeout or step.stage.timeout or self.spec.timeout
            until = self._clock() + limit
            headers = {
                "Content-Type": ctype, "traceparent": span.header, PIPELINE_HEADER: self.name,
                STAGE_HEADER: str(step.index), SHADOW_HEADER: "true", "X-Timeout": f"{limit:.3f}",
            }
            try:
                reply = self.client.post(fn, data, headers, timeout=lambda: until - self._clock())
            except StageCallError as err:
                breaker.record_failure()
                self.metrics.shadow(step.index, fn, "timeout" if err.kind == "timeout" else "connection", None)
                log.warning("router %s: shadow %s of stage %d failed: %s (%s)", self.name, fn, step.index,
                            err.kind, err.message)
                return
            if reply.status >= 500:
                breaker.record_failure()
                outcome = "error"
            else:
                breaker.record_success()
                outcome = "ok" if reply.status < 300 else "client_error"
            self.metrics.shadow(step.index, fn, outcome, reply.seconds)
            log_fn = log.info if outcome == "ok" else log.warning
            log_fn("router %s: shadow %s of stage %d answered %d in %.1f ms", self.name, fn, step.index,
                   reply.status, reply.seconds * 1000)
        except Exception:  # a bug here must not kill the pool thread silently
            log.exception("router %s: shadow %s crashed", self.name, fn)
            self.metrics.shadow(step.index, fn, "error", None)
        finally:
            with self._lock:
                self._shadow_pending -= 1

    # ---- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work: queued shadows/prewarms are cancelled, running ones finish (bounded by timeouts)."""
        self._prewarm_pool.shutdown(wait=True, cancel_futures=True)
        self._shadow_pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def _text(body: bytes) -> str:
    text = body[:_MAX_ERROR_TEXT].decode("utf-8", "replace")
    return text + ("..." if len(body) > _MAX_ERROR_TEXT else "")


def _error_body(body: bytes) -> Any:
    """A stage's error body: its JSON when it is JSON, else its (truncated) text."""
    if not body:
        return ""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _text(body)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
