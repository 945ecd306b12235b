"""The monitor: the worker that turns sampled exchanges into checked rows, windows, metrics and alerts.

One :class:`Monitor` per gateway. The request path calls :meth:`Monitor.tap` and
:meth:`Monitor.offer` (both O(1), no I/O); an asyncio task (:meth:`Monitor.start`) wakes when the
queue has work and hands each batch to one worker thread, which owns all decoding, statistics and
storage, so neither JSON decoding nor SQLite ever runs on the event loop. Alerts go back to the
loop to be posted. API handlers run their queries on the same thread (:meth:`Monitor.call`).

Per function the worker keeps the open window's rows in memory (at most ``window.rows``), the
references (training profile from the model's manifest, else the first window after deploy, kept
in the store so a restart does not forget it) and whether the function is drifting (to send one
alert when drift starts and one when it ends). A restart loses only the open window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hydro_serving.monitor import alerts, decode, reference, windows
from hydro_serving.monitor.checks import check_row
from hydro_serving.monitor.feedback import metrics as quality_metrics
from hydro_serving.monitor.metrics import MonitorMetrics
from hydro_serving.monitor.sampler import DEFAULT_QUEUE, Offered, Sampler, Tap, tap, trace_id_for
from hydro_serving.monitor.storage import MonitorStore, NewRow, StoredRow

log = logging.getLogger("hydro.monitor")

MIN_TIMED_WINDOW = 10  # a window closed by time needs at least this many rows to say anything
TICK = 1.0  # how often open windows are checked for their time limit
PRUNE_EVERY = 60.0
BATCH = 1000

ProfileLoader = Callable[[Any], "dict[str, Any] | None"]


def store_profile(spec: Any) -> dict[str, Any] | None:
    """The training profile of a function's store model (its manifest), None without one."""
    if not spec.model or spec.model_is_local:
        return None
    from hydro_serving.store import open_store

    return open_store().get_manifest(spec.model).training_profile


def variant_of(timings: str | None) -> str | None:
    """The experiment variants a router response says it used (``X-Hydro-Stage-Timings``), joined by commas."""
    if not timings:
        return None
    try:
        stages = json.loads(timings)
    except ValueError:
        return None
    if not isinstance(stages, list):
        return None
    chosen = [str(s.get("variant")) for s in stages
              if isinstance(s, dict) and "|" in str(s.get("name", "")) and s.get("variant")]
    return ",".join(chosen) or None


@dataclass
class FunctionState:
    """What the worker knows about one function between windows."""

    spec: Any
    key: str  # what a baseline belongs to: the model and signature it was recorded under
    in_ref: reference.Reference | None
    out_ref: reference.Reference | None
    seq: int  # the open window's number
    drifting: bool
    started: float = 0.0
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    out_variants: list[str | None] = field(default_factory=list)
    unhealthy: int = 0

    @property
    def monitoring(self) -> Any:
        return self.spec.monitoring

    def due(self, now: float) -> bool:
        m = self.monitoring
        if not self.inputs or m is None:
            return False
        if len(self.inputs) >= m.window_rows:
            return True
        needs_baseline = self.in_ref is None or (self.outputs and self.out_ref is None)
        timed = m.window_seconds > 0 and now - self.started >= m.window_seconds
        return bool(timed and not needs_baseline and len(self.inputs) >= MIN_TIMED_WINDOW)


def _key(spec: Any) -> str:
    signature = spec.signature.to_dict() if spec.signature is not None else None
    raw = json.dumps({"model": spec.model, "signature": signature}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class Monitor:
    """Sampler, worker and queries of one gateway's monitoring."""

    def __init__(self, store: MonitorStore, registry: Any = None, profile_loader: ProfileLoader = store_profile,
                 queue_size: int = DEFAULT_QUEUE, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sampler = Sampler(queue_size)
        self.metrics = MonitorMetrics(self.sampler, registry)
        self.profile_loader = profile_loader
        self.clock = clock
        self.states: dict[str, FunctionState] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydro-monitor")
        self._task: asyncio.Task[None] | None = None
        self._alert_tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._pruned = 0.0
        self.alerts_sent: list[dict[str, Any]] = []  # the last alerts, newest last (for the API)

    # ---- the request path ------------------------------------------------------------------------

    tap = staticmethod(tap)

    def offer(self, t: Tap, spec: Any, request: bytes, response: bytes, status: int,
              timings: str | None = None) -> bool:
        return self.sampler.offer(t, spec, request, response, status, timings)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.sampler._wake = asyncio.Event()
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._drain_once()  # what was queued before the stop is still stored
        for task in list(self._alert_tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, alerts.TIMEOUT)
        if self._session is not None:
            await self._session.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the monitor's thread (the store is used from there only)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self) -> None:
        wake = self.sampler._wake
        assert wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), TICK)
            wake.clear()
            try:
                await self._drain_once()
            except Exception:  # a bug here must not stop monitoring for good
                log.exception("monitor worker failed on a batch")

    async def _drain_once(self) -> None:
        while True:
            batch = self.sampler.drain(BATCH)
            events = await self.call(self.process, batch, self.clock())
            for url, body in events:
                self._send(url, body)
            if not self.sampler.queue:
                return

    def _send(self, url: str, body: dict[str, Any]) -> None:
        self.alerts_sent = [*self.alerts_sent[-99:], body]
        if self._session is None:
            return

        async def go() -> None:
            assert self._session is not None
            ok = await alerts.post(self._session, url, body)
            self.metrics.alerts.labels(body["function"], body["event"], "ok" if ok else "error").inc()

        task = asyncio.get_running_loop().create_task(go())
        self._alert_tasks.add(task)
        task.add_done_callback(self._alert_tasks.discard)

    # ---- the worker thread -----------------------------------------------------------------------

    def _state(self, spec: Any, now: float) -> FunctionState:
        """The function's state, rebuilt when its model or signature changed (a new deploy, new baselines)."""
        state = self.states.get(spec.name)
        key = _key(spec)
        if state is not None and state.key == key:
            state.spec = spec  # window settings may change without new references
            return state
        in_ref = None
        try:
            profile = self.profile_loader(spec)
            if profile:
                in_ref = reference.from_profile(profile)
        except Exception as exc:  # an unreachable store: compare with the first window instead
            log.warning("function %s: training profile unavailable (%s); using the first window", spec.name, exc)
        if in_ref is None:
            stored = self.store.baseline(spec.name, "input", key)
            in_ref = reference.Reference.from_dict(stored) if stored else None
        stored_out = self.store.baseline(spec.name, "output", key)
        out_ref = reference.Reference.from_dict(stored_out) if stored_out else None
        seq = self.store.last_seq(spec.name)
        last = self.store.window(spec.name, seq) if seq else None
        state = FunctionState(spec, key, in_ref, out_ref, seq + 1, bool(last and last.get("drift")), now)
        self.states[spec.name] = state
        return state

    def process(self, batch: Sequence[Offered], now: float) -> list[tuple[str, dict[str, Any]]]:
        """Decode, check, store and window one batch; returns the alerts to post ``(url, body)``."""
        new_rows: list[NewRow] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for item in batch:
            state = self._state(item.spec, now)
            if not state.inputs:
                state.started = item.ts
            new_rows += self._rows(state, item)
            if state.due(now):
                self.store.add_rows(new_rows)
                new_rows = []
                events += self._close(state, now)
        self.store.add_rows(new_rows)
        for state in list(self.states.values()):
            if state.due(now):
                events += self._close(state, now)
        if now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            self.store.prune(now)
        return events

    def _rows(self, state: FunctionState, item: Offered) -> list[NewRow]:
        spec = item.spec
        sig = spec.signature
        inputs = decode.decode(item.request, sig.input_names if sig is not None else ())
        if inputs is None:
            self.metrics.undecodable.labels(spec.name).inc()
            return []
        outputs = decode.decode(item.response, sig.output_names if sig is not None else (), "outputs") \
            if item.status < 400 else None
        if outputs is not None and len(outputs) != len(inputs):
            outputs = None  # the answer's rows do not line up with the request's
        variant = variant_of(item.timings)
        rows = []
        for i, row in enumerate(inputs):
            failures = check_row(row, state.in_ref if state.in_ref is not None and state.in_ref.source == "profile"
                                 else None, sig, item.status)
            out = outputs[i] if outputs is not None else None
            if failures:
                state.unhealthy += 1
                self.metrics.unhealthy.labels(spec.name).inc()
                for failure in failures:
                    self.metrics.failed.labels(spec.name, failure.check).inc()
            if item.status < 400:
                state.inputs.append(row)
                if out is not None:
                    state.outputs.append(out)
                    state.out_variants.append(variant)
            rows.append(NewRow(spec.name, item.request_id, item.trace_id, i, item.ts, item.status, variant,
                               state.seq, row, out, [f.to_dict() for f in failures]))
        self.metrics.rows.labels(spec.name).inc(len(rows))
        return rows

    def _close(self, state: FunctionState, now: float) -> list[tuple[str, dict[str, Any]]]:
        name = state.spec.name
        sig = state.spec.signature
        base_in = state.in_ref is None
        if base_in:
            state.in_ref = reference.from_rows(state.inputs, sig.input_names if sig is not None else ())
            self.store.put_baseline(name, "input", state.key, state.in_ref.to_dict())
        base_out = state.out_ref is None and bool(state.outputs)
        if base_out:
            state.out_ref = reference.from_rows(state.outputs, sig.output_names if sig is not None else ())
            self.store.put_baseline(name, "output", state.key, state.out_ref.to_dict())
        summary = windows.summarize(name, state.seq, state.started, now, state.inputs, state.outputs,
                                    state.out_variants, state.unhealthy, state.in_ref, state.out_ref,
                                    baseline_inputs=base_in, baseline_outputs=base_out)
        self.store.add_window(name, state.seq, summary)
        self.metrics.window(name, summary)
        events: list[tuple[str, dict[str, Any]]] = []
        drift = bool(summary["drift"])
        if drift != state.drifting and not base_in:
            state.drifting = drift
            url = state.monitoring.alert if state.monitoring is not None else None
            if url:
                events.append((url, alerts.message("drift_started" if drift else "drift_ended", summary)))
        state.seq += 1
        state.inputs, state.outputs, state.out_variants, state.unhealthy = [], [], [], 0
        state.started = now
        return events

    # ---- queries (run on the worker thread through :meth:`call`) ---------------------------------

    def prediction_field(self, function: str, row: StoredRow) -> str | None:
        state = self.states.get(function)
        spec = state.spec if state is not None else None
        if spec is not None and spec.monitoring is not None and spec.monitoring.prediction:
            return spec.monitoring.prediction
        if spec is not None and spec.signature is not None and spec.signature.outputs:
            return spec.signature.outputs[0].name
        return next(iter(row.outputs), None) if row.outputs else None

    def add_feedback(self, function: str, items: Sequence[tuple[str, int, Any]]) -> dict[str, Any]:
        """Store labels; report how many already meet a sampled prediction."""
        stored = self.store.add_feedback(function, items)
        ids = sorted({rid for rid, _, _ in items})
        rows = self.store.rows_for_requests(function, ids, [trace_id_for(i) for i in ids])
        keys = {(r.request_id, r.row) for r in rows} | {(r.trace_id, r.row) for r in rows}
        matched = sum(1 for rid, row, _ in items if (rid, row) in keys or (trace_id_for(rid), row) in keys)
        return {"function": function, "accepted": stored, "matched": matched}

    def quality(self, function: str, seqs: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Per window (and per variant) quality of the sampled predictions that have labels."""
        out: dict[int, dict[str, Any]] = {}
        for seq in seqs:
            rows = [r for r in self.store.rows(function, window=seq, limit=1_000_000) if r.outputs is not None]
            if not rows:
                continue
            ids = sorted({r.request_id for r in rows} | {r.trace_id for r in rows})
            labels = self.store.feedback(function, ids)
            pairs: dict[str | None, list[tuple[Any, Any]]] = {}
            for r in rows:
                label = labels.get((r.request_id, r.row), labels.get((r.trace_id, r.row)))
                fname = self.prediction_field(function, r)
                if label is None or fname is None or r.outputs is None:
                    continue
                pair = (r.outputs.get(fname), label)
                pairs.setdefault(None, []).append(pair)
                if r.variant:
                    pairs.setdefault(r.variant, []).append(pair)
            if pairs:
                entry = quality_metrics(pairs.pop(None, []))
                entry["variants"] = {v: quality_metrics(p) for v, p in pairs.items()}
                out[seq] = entry
                for metric in ("accuracy", "precision", "recall", "mae", "rmse"):
                    if entry.get(metric) is not None:
                        self.metrics.quality.labels(function, "all", metric).set(entry[metric])
        return out

    def overview(self, function: str, limit: int, window: int | None, unhealthy: int) -> dict[str, Any]:
        wins = self.store.windows(function, limit)
        quality = self.quality(function, [w["seq"] for w in wins])
        short = []
        for w in wins:
            s = {k: w.get(k) for k in ("seq", "started", "ended", "rows", "unhealthy", "baseline", "reference",
                                       "drift", "drift_share", "drifted_fields", "output_drift", "variant_rows")}
            s["quality"] = quality.get(w["seq"])
            short.append(s)
        chosen = self.store.window(function, window) if window is not None else (wins[-1] if wins else None)
        state = self.states.get(function)
        return {
            "function": function, "windows": short, "window": chosen,
            "open_window": None if state is None else {"seq": state.seq, "rows": len(state.inputs)},
            "unhealthy": [r.to_dict() for r in self.store.rows(function, unhealthy_only=True, limit=unhealthy)],
            "rows_stored": self.store.count_rows(function),
            "samples_dropped": self.sampler.dropped.get(function, 0),
            "drifting": bool(state.drifting) if state is not None else bool(chosen and chosen.get("drift")),
        }


def labels_from(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, Any]]:
    """``[{"request_id", "label", "row"?}]`` (already validated by the API) as store tuples."""
    return [(str(i["request_id"]), int(i.get("row", 0)), i["label"]) for i in items]


MONITOR_DB_ENV = "HYDRO_MONITOR_DB"  # sqlite:///path (default <state>/monitor.db); the seam for another database
MONITOR_QUEUE_ENV = "HYDRO_MONITOR_QUEUE"  # samples waiting for the worker before new ones are dropped
MONITOR_ROWS_ENV = "HYDRO_MONITOR_MAX_ROWS"  # sampled rows kept per function
MONITOR_DAYS_ENV = "HYDRO_MONITOR_MAX_DAYS"  # and none older than this


def for_gateway(state_dir: Any, registry: Any, env: Mapping[str, str] | None = None) -> Monitor:
    """The gateway's monitor: its own SQLite file in the state directory, the gateway's metrics registry."""
    import os
    from pathlib import Path

    from hydro_serving.errors import ConfigError
    from hydro_serving.monitor.storage import DEFAULT_MAX_AGE, DEFAULT_MAX_ROWS, open_monitor_store

    env = os.environ if env is None else env

    def positive(key: str, default: float) -> float:
        raw = env.get(key) or str(default)
        try:
            value = float(raw)
            if not value > 0 or value != value or value == float("inf"):
                raise ValueError
        except ValueError:
            raise ConfigError(f"{key} must be a positive number, got {raw!r}", field=key) from None
        return value

    url = env.get(MONITOR_DB_ENV) or str(Path(state_dir) / "monitor.db")
    queue = int(positive(MONITOR_QUEUE_ENV, DEFAULT_QUEUE))
    rows = int(positive(MONITOR_ROWS_ENV, DEFAULT_MAX_ROWS))
    age = positive(MONITOR_DAYS_ENV, DEFAULT_MAX_AGE / 86400) * 86400
    return Monitor(open_monitor_store(url, max_rows=max(rows, 1), max_age=age), registry,
                   queue_size=max(queue, 1))
