"""Serving a function with gunicorn (gthread), started from Python rather than a shell command.

The spec and the template are checked in the master before binding the port, so a typo fails at
once with one line; the app (and the model load) is created in each worker after fork, so no
framework state crosses a fork and every worker answers /_/ready 503 while its model loads.

A failed model load is logged with its traceback, reported by /_/ready for
``HYDRO_LOAD_FAILURE_EXIT`` seconds (default 3s; ``never`` keeps serving 503), then the worker
exits with status 3; gunicorn treats that as "worker failed to boot" and the whole server exits
with status 3, so a supervisor (the gateway, Docker, Kubernetes) notices instead of a restart loop.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from hydro_serving.errors import ConfigError
from hydro_serving.runtime import onewrite
from hydro_serving.runtime.adapters import adapter_class
from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.runtime.loader import Preloaded, load_function
from hydro_serving.runtime.metrics import enable_multiprocess
from hydro_serving.runtime.process import die_with_parent
from hydro_serving.runtime.service import WorkerBarrier
from hydro_serving.stack.model import FunctionSpec
from hydro_serving.templates import Template, get_template

log = logging.getLogger("hydro.runtime")


def read_spec(path: str | Path) -> FunctionSpec:
    """The canonical function JSON (``FunctionSpec.to_dict()``), validated like stack.yml."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"function spec {path} does not exist", field="spec") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"function spec {path} is not valid JSON: {exc}", field="spec") from None
    return FunctionSpec.from_dict(data, where=str(path))


# Templates whose model costs too much per process to duplicate it by default: a JVM (spark) or a
# TensorFlow runtime per worker is hundreds of MB to GBs, and each of them already uses every core.
ONE_WORKER_TEMPLATES = frozenset({"spark", "tensorflow"})
MAX_DEFAULT_WORKERS = 2


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset or taskset), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(template: Template, cpus: int | None = None) -> int:
    """Worker processes when neither ``--workers`` nor ``HYDRO_WORKERS`` says: ``min(2, cpus)`` for models.

    Why: a model's ``predict`` holds the GIL for most of a request, so one process tops out at one
    core; on the 2-core bench machine a second worker nearly doubled req/s at c=32 (BENCHMARKS.md).
    Capped at 2 because every worker holds its own copy of the model and loads it at start (memory
    and cold-start CPU grow with the count); an operator sets ``HYDRO_WORKERS`` for more. One worker
    for spark/tensorflow (a JVM or TF runtime per process, and they are multi-threaded already), for
    custom functions (user code may keep in-process state, as with OpenFaaS's one-process watchdog),
    and for routers.

    Routers, measured (issue 18 point 3): a 1-stage iris pipeline on the direct path, 1 vs 2 router
    workers on 2 cores shared with the gateway and the stage replica, interleaved rounds. On a busy
    machine (load average 6-7, 4 rounds) 2 workers served ~13% more req/s at c=8 (1213 vs 1077
    median); on a quiet one (3 rounds) ~22% more (1631 vs 1335); the p50 at c=1 was the same in both
    (+0.82 vs +0.81 ms over the replica, quiet). One worker stays the default anyway, because a
    router's direct path caps its calls in flight per stage replica at the stage's ``concurrency``
    *per process* (direct.py): two workers would let twice the stage's concurrency reach a replica
    and report half the in-flight peaks the gateway scales on, and every breaker would need its
    failures counted in each worker before it opens. ``HYDRO_WORKERS=2`` on a router buys that
    throughput where the stages' concurrency has headroom; making it the default needs the in-flight
    cap (and the peaks reported to the gateway) shared across workers first.
    """
    if not adapter_class(template).several_workers or template.name in ONE_WORKER_TEMPLATES:
        return 1
    return min(MAX_DEFAULT_WORKERS, cpus if cpus is not None else cpu_count())


def default_threads(workers: int, spec: FunctionSpec | None = None) -> int:
    """Threads per worker: 8 for one worker, 4 each for more (the same 8 concurrent requests per replica
    as before, and fewer threads contending for each process's GIL on CPU-bound predicts).

    With batching on, at least ``max_batch_size`` per worker: a gthread worker holds one request per
    thread, so with 4 threads no batch could ever be larger than 4 (issue 18: batches of 3.8 at c=32
    made batching slower than no batching). The extra threads mostly wait on the batch's future.
    """
    threads = 8 if workers <= 1 else 4
    if spec is not None and spec.batching.enabled:
        threads = max(threads, spec.batching.max_batch_size)
    return threads


def setup_logging() -> None:
    """Log lines on stderr with the process id (several workers write to one stream)."""
    level = os.environ.get("HYDRO_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "INFO",
                        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")


def _post_fork(server: Any, worker: Any) -> None:
    """In a new worker: die with the arbiter (Linux), so a SIGKILLed replica leaves no worker behind.

    Otherwise a worker notices a dead arbiter only at its next loop turn (about a second), and a
    killed supervisor chain (gateway -> zygote -> arbiter) would briefly leave orphans holding the port.
    Also: this worker's answers leave head and body in one write (:mod:`onewrite`).
    """
    die_with_parent(server.pid)
    onewrite.install()


def _worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook in a worker that is exiting: shut the function down (its handler's ``close()``).

    Without it a handler's background threads (the router's shadows and prewarms) would be cut off
    mid-request by the interpreter's exit instead of being stopped.
    """
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("hydro_runtime") if app is not None else None
    if runtime is not None:
        runtime.shutdown()


# Templates whose load is plain deserialisation (numpy arrays, no threads, no native pools started), so
# the master may load the model once before it forks the workers: a cold start then pays one load
# instead of two competing for the same cores, and the workers share the model's pages (issue 18).
LOAD_BEFORE_FORK_TEMPLATES = frozenset({"sklearn"})
LOAD_BEFORE_FORK_ENV = "HYDRO_LOAD_BEFORE_FORK"  # "0" turns it off (each worker loads, as before)
# While the master loads, no worker answers yet: probes wait in the listen backlog instead of seeing
# /_/ready 503 "loading". Fine for a model that loads in well under a second; a bigger one keeps the
# observable loading state (each worker loads it in the background, as before).
LOAD_BEFORE_FORK_MAX_BYTES = 256 * 1024 * 1024


def _local_model_bytes(spec: FunctionSpec) -> int | None:
    """Bytes of a local model file or folder; None for a store model (its size is known only once fetched)."""
    if not spec.model or not spec.model_is_local:
        return None
    path = Path(spec.model.removeprefix("file://")).expanduser()
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None


def load_before_fork(spec: FunctionSpec, template: Template, workers: int,
                     env: dict[str, str] | None = None) -> Preloaded | None:
    """In the master, after binding and before forking: the loaded function, or None to let workers load.

    Only for several workers of a template in :data:`LOAD_BEFORE_FORK_TEMPLATES` and a local model of at most
    :data:`LOAD_BEFORE_FORK_MAX_BYTES` (a store model is fetched by the workers as before). A failed load is not
    reported here: the workers then load on their own and report it as always (/_/ready 503 with the
    cause, then the boot-error exit), so there is one failure path. A load that left a thread running
    is not used either (a fork copies only the calling thread).
    """
    env = dict(os.environ) if env is None else env
    if workers < 2 or template.name not in LOAD_BEFORE_FORK_TEMPLATES or env.get(LOAD_BEFORE_FORK_ENV) == "0":
        return None
    size = _local_model_bytes(spec)
    if size is None or size > LOAD_BEFORE_FORK_MAX_BYTES:
        return None
    started = time.monotonic()
    threads_before = threading.active_count()
    try:
        loaded = load_function(spec, template)
    except Exception as exc:
        log.info("function '%s': the master could not load the model (%s); the workers load it", spec.name,
                 type(exc).__name__)
        return None
    if threading.active_count() > threads_before:  # the load started one (a fork would copy only this thread)
        log.warning("function '%s': loading started threads; the workers load the model themselves", spec.name)
        return None
    seconds = time.monotonic() - started
    log.info("function '%s': ready in %.3fs (loaded once, before forking %d workers)", spec.name, seconds, workers)
    return Preloaded(loaded, seconds)


class ReplicaArbiter(Arbiter):
    """gunicorn's arbiter without the random pause (up to 100 ms) after forking each worker.

    gunicorn sleeps ``0.1 * random()`` after every worker it spawns, against a thundering herd of
    restarts on big servers; a replica has two workers and reports ready only when both are up
    (WorkerBarrier), so the pause was on average ~50 ms of every cold start (issue 18's profile).
    """

    def spawn_workers(self) -> None:
        for _ in range(self.num_workers - len(self.WORKERS)):
            self.spawn_worker()


def bind_address(host: str, port: int, unix_socket: str | None = None) -> str:
    """gunicorn's bind: ``unix:PATH`` when the supervisor chose a socket (the gateway's local provider), else TCP."""
    if unix_socket:
        return f"unix:{unix_socket}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RuntimeServer(BaseApplication):
    """gunicorn's application interface over :func:`hydro_serving.runtime.app.create_app`."""

    def __init__(self, spec: FunctionSpec, host: str, port: int, workers: int = 1, threads: int = 8,
                 access_log: bool = False, unix_socket: str | None = None, template: Template | None = None) -> None:
        if workers < 1 or threads < 1:
            raise ConfigError("workers and threads must be at least 1", field="workers")
        self.spec = spec
        # read once per replica: each read parses template.yml and checks its options schema (~20 ms)
        self.template: Template = template or get_template(spec.lang)
        self.runtime_config = RuntimeConfig.from_env(spec)
        # created here, in the arbiter before it forks: every worker shares it (see WorkerBarrier)
        self.barrier: WorkerBarrier | None = WorkerBarrier(workers) if workers > 1 else None
        # several workers: metric values in files of one directory, summed on /metrics (runtime.metrics)
        self.metrics_dir: str | None = tempfile.mkdtemp(prefix="hydro-metrics-") if workers > 1 else None
        metrics_dir = self.metrics_dir

        def post_fork(server: Any, worker: Any) -> None:
            _post_fork(server, worker)
            if metrics_dir is not None:
                enable_multiprocess(metrics_dir)

        def child_exit(server: Any, worker: Any) -> None:
            if metrics_dir is not None:  # its live gauges (in flight, ready) stop counting; counters stay
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(worker.pid, metrics_dir)

        def on_exit(server: Any) -> None:
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)

        self.preloaded: Preloaded | None = None

        def when_ready(server: Any) -> None:  # the master, sockets bound, before the first worker is forked
            self.preloaded = load_before_fork(spec, self.template, workers)
        self.options: dict[str, Any] = {
            "bind": bind_address(host, port, unix_socket),
            # a unix socket is created 0600 (owner: the replica's user); the gateway is root or the same user
            "umask": 0o177 if unix_socket else None,
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            # keep connections longer than aiohttp clients' 15s default, so the client closes first
            "keepalive": 30,
            "graceful_timeout": max(1, min(int(self.runtime_config.timeout + 1), 30)),
            "proc_name": f"hydro-fn-{spec.name}",
            "accesslog": "-" if access_log else None,
            "errorlog": "-",
            "loglevel": os.environ.get("HYDRO_LOG_LEVEL", "info").lower(),
            # gunicorn >= 23 opens a control socket at one fixed path per user; many replicas on one
            # machine would fight over it, and nothing here uses it
            "control_socket_disable": True,
            # gunicorn's defaults are the euid/egid when gunicorn was imported: in a zygote (the gateway's
            # user) that is not the sandboxed replica's, and its worker files would be chowned to it
            "user": os.geteuid(),
            "group": os.getegid(),
            "worker_exit": _worker_exit,
            "post_fork": post_fork,
            "child_exit": child_exit,
            "on_exit": on_exit,
            "when_ready": when_ready,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None and key in self.cfg.settings:
                self.cfg.set(key, value)

    def run(self) -> None:
        try:
            ReplicaArbiter(self).run()
        except RuntimeError as exc:  # what gunicorn's own run() does with a configuration error
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)

    def load(self) -> Any:
        return create_app(self.spec, self.runtime_config, template=self.template, exit_on_load_failure=True,
                          barrier=self.barrier, preloaded=self.preloaded)


def serve(spec: FunctionSpec, host: str = "127.0.0.1", port: int = 8080, workers: int = 1, threads: int = 8,
          access_log: bool = False, unix_socket: str | None = None, template: Template | None = None) -> None:
    """Serve ``spec`` in the foreground until SIGINT/SIGTERM (gunicorn then exits the process)."""
    setup_logging()
    RuntimeServer(spec, host, port, workers, threads, access_log, unix_socket, template=template).run()
