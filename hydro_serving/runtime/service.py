"""One function being served: its loader, its limits and the calls into its handler.

The Flask routes translate HTTP to these methods and back; everything a request does after its
body has been parsed (readiness, validation, in-flight cap, timeout, batching, handler errors)
happens here, so the V2 and plain invoke paths share one set of rules.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.v2 import inputs_to_numpy, numpy_to_tensor, parse_infer_request
from hydro_serving.errors import HandlerError, HydroError, ServiceUnavailable
from hydro_serving.runtime.batching import Batcher
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.runtime.executor import Executor
from hydro_serving.runtime.loader import BackgroundLoader, LoadedFunction, Preloaded
from hydro_serving.runtime.metrics import RuntimeMetrics
from hydro_serving.sdk.context import InvocationContext
from hydro_serving.stack.model import FunctionSpec
from hydro_serving.templates import Template

log = logging.getLogger("hydro.runtime")

# gunicorn's arbiter stops the whole server when a worker exits with this status ("worker failed to boot")
WORKER_BOOT_ERROR = 3


class WorkerBarrier:
    """How many of a server's worker processes have loaded their model, in memory shared across fork.

    Why: with several gunicorn workers, the kernel hands each connection to any of them, so a
    worker that has loaded its model would answer /_/ready 200 while its sibling is still loading,
    and the supervisor's first requests would then meet the sibling's 503 "loading". The arbiter
    creates one barrier before forking; each worker arrives once its model is loaded, and the
    server reports ready only when all of them have. A worker replaced after a crash arrives again
    (the count only grows): during that reload the gateway retries the new worker's 503 "loading",
    as it always has.
    """

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.workers = workers
        self._count = multiprocessing.RawValue("i", 0)  # an anonymous shared mapping: inherited by fork
        self._failed = multiprocessing.RawValue("i", 0)
        self._lock = multiprocessing.Lock()

    def claim_failure_exit(self) -> bool:
        """True for the first worker whose load failed: it alone exits with the boot-error status.

        Two workers exiting with it at the same instant make gunicorn's arbiter raise its HaltServer a
        second time while handling the first, and the server then exits 1 instead of 3. The first exit
        halts the server, which stops the siblings anyway.
        """
        with self._lock:
            if self._failed.value:
                return False
            self._failed.value = 1
            return True

    def arrive(self) -> None:
        with self._lock:
            self._count.value += 1

    @property
    def complete(self) -> bool:
        return self._count.value >= self.workers

    def wait(self, seconds: float, poll: float = 0.005) -> bool:
        """Until every worker has arrived or ``seconds`` passed (polled: siblings are other processes)."""
        deadline = time.monotonic() + seconds
        while not self.complete:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True


class FunctionRuntime:
    """Loader + executor + (optional) batcher for one function in one process."""

    def __init__(self, spec: FunctionSpec, config: RuntimeConfig, metrics: RuntimeMetrics,
                 template: Template | None = None, exit_on_load_failure: bool = False,
                 barrier: WorkerBarrier | None = None, preloaded: Preloaded | None = None) -> None:
        self.spec = spec
        self.barrier = barrier
        self.config = config
        self.metrics = metrics
        self.exit_on_load_failure = exit_on_load_failure
        self.loader = BackgroundLoader(spec, template, on_ready=self._on_ready, on_failure=self._on_failure,
                                       metrics_registry=metrics.registry, preloaded=preloaded)
        gauge = metrics.inflight.labels(spec.name)
        self.executor = Executor(spec.name, config.max_inflight, on_change=gauge.set)
        self.batcher: Batcher | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.loader.start()

    def _on_ready(self, seconds: float) -> None:
        self.metrics.load_seconds.labels(self.spec.name).set(seconds)
        self.metrics.ready.labels(self.spec.name).set(1)
        loaded = self.loader.loaded
        predict_batch = loaded.adapter.predict_batch if loaded is not None else None
        if predict_batch is not None and self.spec.batching.enabled:
            observe = self.metrics.batch_size.labels(self.spec.name).observe
            self.batcher = Batcher(predict_batch, self.spec.batching.max_batch_size,
                                   self.spec.batching.max_batch_delay_ms, on_batch=observe)
            log.info("function '%s': adaptive batching up to %d requests / %gms", self.spec.name,
                     self.spec.batching.max_batch_size, self.spec.batching.max_batch_delay_ms)
        if self.barrier is not None:  # last: this worker is ready to take any request now
            self.barrier.arrive()

    def _on_failure(self, exc: BaseException) -> None:
        delay = self.config.load_failure_exit_after
        if not self.exit_on_load_failure or delay is None:
            return
        if self.barrier is not None and not self.barrier.claim_failure_exit():
            log.error("function '%s': load failed here too; a sibling worker's exit stops the server",
                      self.spec.name)
            return
        log.error("function '%s': exiting in %gs with status %d so the supervisor sees the failed load",
                  self.spec.name, delay, WORKER_BOOT_ERROR)
        timer = threading.Timer(delay, os._exit, args=(WORKER_BOOT_ERROR,))
        timer.daemon = True
        timer.start()

    def shutdown(self) -> None:
        """Stop taking work and release the handler's resources (the router's threads and pools).

        Called once when the worker exits; a handler's ``close()`` failing is logged, never raised,
        because the process is going away either way.
        """
        if self.batcher is not None:
            self.batcher.close()
        self.executor.shutdown()
        loaded = self.loader.loaded
        if loaded is not None:
            try:
                loaded.adapter.close()
            except Exception:
                log.exception("function '%s': the handler's close() failed", self.spec.name)

    # ---- readiness ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """This worker has its model, and so has every sibling worker of the server (see WorkerBarrier)."""
        return self.loader.loaded is not None and (self.barrier is None or self.barrier.complete)

    def wait_ready(self, seconds: float) -> None:
        """Hold a /_/ready?wait= until this worker and its siblings are loaded (or ``seconds`` pass)."""
        deadline = time.monotonic() + seconds
        if self.loader.state == "loading":
            self.loader.wait(seconds)
        if self.barrier is not None and self.loader.state == "ready":
            self.barrier.wait(max(0.0, deadline - time.monotonic()))

    def readiness(self) -> dict[str, Any]:
        """The /_/ready body; raises 503 (with the load error when there is one) until loaded."""
        state = self.loader.state
        if state == "ready" and self.barrier is not None and not self.barrier.complete:
            raise ServiceUnavailable(f"function '{self.spec.name}' is loading in another worker", retry_after=1,
                                     function=self.spec.name, details={"status": "loading"})
        if state == "ready":
            return {"status": "ready", "function": self.spec.name, "load_seconds": self.loader.load_seconds}
        if state == "failed":
            raise ServiceUnavailable(f"function '{self.spec.name}' failed to load: {self.loader.error}",
                                     function=self.spec.name, details={"status": "failed"})
        raise ServiceUnavailable(f"function '{self.spec.name}' is loading", retry_after=1,
                                 function=self.spec.name, details={"status": "loading"})

    def require_loaded(self) -> LoadedFunction:
        loaded = self.loader.loaded
        if loaded is None:
            self.readiness()  # raises the right 503
            raise AssertionError("unreachable")
        return loaded

    @property
    def signature(self) -> Signature | None:
        """The declared signature (stack.yml, else the store manifest), else what the handler reports.

        Declared inputs without declared outputs take the outputs the handler reports, so the V2
        metadata advertises what infer returns (issue 14 point 12).
        """
        loaded = self.loader.loaded
        declared = loaded.spec.signature if loaded is not None else None
        declared = declared if declared is not None else self.spec.signature
        reported = loaded.adapter.signature if loaded is not None else None
        if declared is None:
            return reported
        if not declared.outputs and reported is not None and reported.outputs:
            return Signature(inputs=declared.inputs, outputs=reported.outputs)
        return declared

    def model_metadata(self) -> dict[str, Any]:
        """The loaded store model's version(s) and framework versions, for the V2 metadata."""
        loaded = self.loader.loaded
        manifest = loaded.manifest if loaded is not None else None
        if manifest is None:
            return {"versions": []}
        parameters: dict[str, Any] = {"model": manifest.ref}
        if manifest.framework_versions:
            parameters["framework_versions"] = dict(manifest.framework_versions)
        if loaded is not None and loaded.version_mismatches:
            parameters["framework_version_mismatch"] = loaded.version_mismatches
        return {"versions": [str(manifest.version)], "parameters": parameters}

    # ---- invocation --------------------------------------------------------------------------

    def context(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str], path: str,
                method: str) -> InvocationContext:
        return InvocationContext(spec=self.spec, headers=dict(headers), body=body, query=dict(query), path=path,
                                 method=method, deadline=time.monotonic() + self.config.timeout)

    def invoke(self, payload: Any, context: InvocationContext | None) -> Any:
        """Validate against the signature and run the handler under the limits.

        ``context`` is None on a model's fast path (:mod:`fastpath`): a model's ``predict`` never sees it.
        """
        loaded = self.require_loaded()
        signature = loaded.spec.signature
        if signature is not None and signature.inputs and not isinstance(payload, bytes | str | None):
            signature.validate_payload(payload)
        if self.batcher is not None:
            batcher = self.batcher
            return self._guard(lambda: self.executor.submit_and_wait(lambda: batcher.submit(payload),
                                                                     self.config.timeout))
        return self._run(loaded, loaded.adapter.call(payload, context))

    def infer_v2(self, body: Any, context: InvocationContext) -> dict[str, Any]:
        """A V2 infer request -> V2 response (``model_name``, ``id`` echoed, one tensor per output)."""
        loaded = self.require_loaded()
        request_id, _parameters, inputs = parse_infer_request(body)
        arrays = inputs_to_numpy(inputs, loaded.spec.signature)
        outputs = self._run(loaded, loaded.adapter.call_v2(arrays, context))
        try:
            tensors = [numpy_to_tensor(name, value) for name, value in outputs.items()]
        except Exception as exc:
            log.error("function '%s': output is not a tensor", self.spec.name, exc_info=exc)
            raise HandlerError(f"function '{self.spec.name}' returned outputs that are not tensors",
                               function=self.spec.name) from None
        response: dict[str, Any] = {"model_name": self.spec.name, "outputs": tensors}
        if request_id is not None:
            response["id"] = request_id
        return response

    def _run(self, loaded: LoadedFunction, call: Any) -> Any:
        """A model's call inline (CPU-bound, in memory: no pool handoff), a function's on the executor's pool."""
        run = self.executor.run_inline if loaded.adapter.inline else self.executor.run
        return self._guard(lambda: run(call, self.config.timeout))

    def _guard(self, run: Any) -> Any:
        """Our errors pass through; anything else a handler raised is logged and becomes a bare 500."""
        try:
            return run()
        except HydroError:
            raise
        except Exception as exc:
            log.error("function '%s': handler raised %s", self.spec.name, type(exc).__name__, exc_info=exc)
            raise HandlerError(f"function '{self.spec.name}' failed ({type(exc).__name__}); the details are "
                               f"in the function's log", function=self.spec.name) from None

