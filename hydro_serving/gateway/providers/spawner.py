"""Starting local replicas by forking a pre-imported template process (a zygote) instead of a fresh interpreter.

A fresh ``python -m hydro_serving.runtime`` spends nearly all of its cold start importing (sklearn,
flask, gunicorn); :mod:`hydro_serving.runtime.zygote` pays that once per template and forks
replicas that already have it, so a cold start is a fork plus a model load.

:class:`ZygoteSpawner` is what :class:`~hydro_serving.gateway.providers.local.LocalProvider` asks
first: it keeps one zygote per (template, python executable, import-time environment), started
at deploy or at first need and started again if it died, and returns a :class:`ZygoteChild` that
behaves like the ``asyncio.subprocess.Process`` the provider already handles (``pid``,
``returncode``, ``wait()``), so stopping, crash detection and log reading are unchanged. The
zygote, being the replica's parent, reports its exit status over the socket.

It answers None - "start a plain subprocess" - when ``HYDRO_ZYGOTE=0``, when the replica runs
under another interpreter (a function isolated in its own venv), or when the zygote cannot be
started or does not answer (logged, and not retried for ``RETRY_AFTER`` seconds).

Environment variables read at import time (thread counts, ``PYTHONPATH``, ``LD_*``, ...) are part
of the zygote's key: a function that sets them gets a zygote started with them; every other
variable is applied in the child after the fork.

A zygote is shared by the functions of one template, so it never holds anything of theirs: it is
started with the replica base environment (never the gateway's), and a spawn request carries the
path of a 0600 file with the replica's environment, which the child reads after the fork. The
child enters the function's sandbox (:func:`hydro_serving.replica.sandbox.enter`) before it runs
anything of the function.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydro_serving.replica.environment import base_environment
from hydro_serving.replica.sandbox import Plan

log = logging.getLogger("hydro.gateway")

ENABLE_ENV = "HYDRO_ZYGOTE"
RUNTIME_MODULE = "hydro_serving.runtime"
READY_TIMEOUT = 300.0  # a TensorFlow-size import on a busy machine; a spawn waits at most this for the zygote
REPLY_TIMEOUT = 10.0  # a fork answers in milliseconds
RETRY_AFTER = 30.0  # seconds before trying again a zygote that failed to start
STOP_GRACE = 15.0

# read when a module is imported or a native library loads, so they must be in the zygote before its imports
IMPORT_SENSITIVE = re.compile(
    r"^(PYTHON\w*|LD_\w+|MALLOC_\w+|\w*_NUM_THREADS|OPENBLAS_\w+|GOTO\w+|MKL_\w+|OMP_\w+|KMP_\w+|SKLEARN_\w+"
    r"|JOBLIB_\w+|NUMPY_\w+|SCIPY_\w+|CUDA_\w+|TF_\w+|XLA_\w+|HYDRO_TEMPLATES)$")

def zygote_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """``HYDRO_ZYGOTE`` (gateway environment): on unless ``0``/``false``/``no``/``off``; Linux only."""
    raw = (os.environ if environ is None else environ).get(ENABLE_ENV, "1").strip().lower()
    return sys.platform.startswith("linux") and raw not in ("0", "false", "no", "off")


GATEWAY_PATHS = ("PYTHONPATH", "HYDRO_TEMPLATES")  # where the zygote finds the package and templates


def zygote_environment(gateway_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A zygote's own environment: the replica base (never the gateway's secrets: every replica it
    forks carries a copy of its memory) plus where the gateway's package and templates are."""
    gateway_env = os.environ if gateway_env is None else gateway_env
    env = base_environment(gateway_env)
    env.update({k: gateway_env[k] for k in GATEWAY_PATHS if gateway_env.get(k)})
    return env


def import_environment(env: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``env`` that differ from ``base`` (the zygote's) and matter at import time."""
    base = zygote_environment() if base is None else base
    return {k: v for k, v in env.items() if IMPORT_SENSITIVE.match(k) and base.get(k) != v}


def write_private_json(path: Path, data: Any) -> None:
    """``data`` as JSON in a new 0600 file (replaced atomically, never written through a link)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def preload_modules(template: Any) -> list[str]:
    """What the zygote of ``template`` imports besides the runtime and the template's handler module.

    The template says (``preload:`` in template.yml, e.g. the sklearn submodules that unpickling
    common estimators imports); TensorFlow and Spark templates list nothing on purpose, since their
    runtimes start threads or a JVM that a fork cannot copy.
    """
    return list(getattr(template, "preload", ()) or ())


def template_version(template: Any) -> tuple[float, ...]:
    """Modification times of the template's files: an edited template gets a fresh zygote."""
    folder = Path(template.path)
    with contextlib.suppress(OSError):
        return tuple(sorted(p.stat().st_mtime for p in folder.rglob("*") if p.suffix in (".py", ".yml")))
    return ()


class ZygoteChild:
    """A replica forked by a zygote, shaped like ``asyncio.subprocess.Process`` for the provider."""

    def __init__(self, pid: int, zygote: Zygote) -> None:
        self.pid = pid
        self.zygote = zygote
        self.returncode: int | None = None
        self._exited = asyncio.get_running_loop().create_future()

    def _set_exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            if not self._exited.done():
                self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


class Zygote:
    """One zygote process and the gateway's end of its socket."""

    def __init__(self, key: tuple[Any, ...], template: str) -> None:
        self.key = key
        self.template = template
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.children: dict[int, ZygoteChild] = {}
        self.retired = False
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0
        self._reader_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not (
            self._reader_task is not None and self._reader_task.done())

    async def start(self, python: str, preload: list[str], env: dict[str, str], log_path: Path) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [python, "-m", f"{RUNTIME_MODULE}.zygote", "--template", self.template, "--fd", str(theirs.fileno()),
                "--parent", str(os.getpid())]
        for module in preload:
            argv += ["--preload", module]
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "ab") as out:
                # its own session, so a signal to the gateway's group does not reach it before the replicas
                # are stopped in order; it dies with the gateway (--parent: PR_SET_PDEATHSIG) all the same
                self.proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    env={**env, "PYTHONUNBUFFERED": "1"}, pass_fds=(theirs.fileno(),), start_new_session=True)
        finally:
            theirs.close()
        try:
            self.reader, self.writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            raise
        self._reader_task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                message = json.loads(line)
                if "reply" in message:
                    future = self._replies.pop(message["reply"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("event") == "exit":
                    child = self.children.pop(message["pid"], None)
                    if child is not None:
                        child._set_exit(int(message["code"]))
                elif message.get("event") == "ready" and not self.ready.done():
                    self.ready.set_result(message)
        except (OSError, ValueError) as exc:
            log.warning("zygote %s: connection failed: %s", self.template, exc)
        finally:
            self._lost()

    def _lost(self) -> None:
        """The zygote is gone: its children die with it (PR_SET_PDEATHSIG); make sure, and report them dead."""
        error = ConnectionError(f"the zygote of template '{self.template}' exited")
        if not self.ready.done():
            self.ready.set_exception(error)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(error)
        self._replies.clear()
        for pid, child in list(self.children.items()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            child._set_exit(-signal.SIGKILL)
        self.children.clear()

    async def spawn(self, argv: list[str], env_file: str, cwd: str, log_path: str, plan: Plan) -> ZygoteChild:
        await asyncio.wait_for(asyncio.shield(self.ready), READY_TIMEOUT)
        async with self._lock:  # one request at a time: a reply is matched to its request by id anyway
            if self.writer is None or not self.alive:
                raise ConnectionError(f"the zygote of template '{self.template}' is not running")
            self._ids += 1
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._replies[self._ids] = future
            request = {"op": "spawn", "id": self._ids, "argv": argv, "env_file": env_file, "cwd": cwd,
                       "log": log_path, "sandbox": plan.to_dict()}
            self.writer.write(json.dumps(request).encode() + b"\n")
            await self.writer.drain()
            reply = await asyncio.wait_for(future, REPLY_TIMEOUT)
        if "error" in reply:
            raise OSError(reply["error"])
        child = ZygoteChild(int(reply["pid"]), self)
        self.children[child.pid] = child
        return child

    async def close(self, grace: float = STOP_GRACE) -> None:
        """End of file to the zygote (it stops its children and exits); SIGKILL it after ``grace``."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.wait_for(self.proc.wait(), 10)
        if self._reader_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader_task, 5)
        self._lost()  # backstop: no child of it outlives it


class ZygoteSpawner:
    """The zygotes of one gateway: at most one live zygote per key, none after :meth:`close`."""

    def __init__(self, logs_dir: Path, enabled: bool | None = None) -> None:
        self.logs_dir = logs_dir
        self.enabled = zygote_enabled() if enabled is None else enabled
        self._zygotes: dict[tuple[Any, ...], Zygote] = {}
        self._retired: list[Zygote] = []
        self._failed_until: dict[tuple[Any, ...], float] = {}
        self._closed = False

    def _usable(self, argv: list[str]) -> bool:
        return (self.enabled and not self._closed and len(argv) >= 3 and argv[0] == sys.executable
                and argv[1:3] == ["-m", RUNTIME_MODULE])

    async def _zygote(self, template_name: str, python: str, env: Mapping[str, str]) -> Zygote | None:
        """The live zygote for this template and environment, started now if there is none (None: failed)."""
        from hydro_serving.templates import get_template

        template = get_template(template_name)
        overrides = import_environment(env)
        key = (template_name, str(template.path), template_version(template), python,
               tuple(sorted(overrides.items())))
        zygote = self._zygotes.get(key)
        if zygote is not None and zygote.alive:
            return zygote
        if zygote is not None:
            log.warning("zygote of template '%s' exited (status %s); starting a new one", template_name,
                        zygote.proc.returncode if zygote.proc else None)
            self._zygotes.pop(key, None)
        if time.monotonic() < self._failed_until.get(key, 0.0):
            return None
        self._retire_replaced(key)
        zygote = Zygote(key, template_name)
        self._zygotes[key] = zygote
        log_path = self.logs_dir / f"zygote-{template_name}-{len(self._zygotes)}.log"
        try:
            await zygote.start(python, preload_modules(template), {**zygote_environment(), **overrides}, log_path)
        except OSError as exc:
            self._zygotes.pop(key, None)
            self._failed_until[key] = time.monotonic() + RETRY_AFTER
            log.warning("zygote of template '%s' could not start (%s); replicas start as plain processes",
                        template_name, exc)
            return None
        return zygote

    def _retire_replaced(self, key: tuple[Any, ...]) -> None:
        """An edited template (same name, other files) gets a new zygote; the old one ends with its replicas."""
        for other_key, zygote in list(self._zygotes.items()):
            if other_key[0] == key[0] and other_key[3:] == key[3:] and other_key != key:
                self._zygotes.pop(other_key)
                zygote.retired = True
                self._retired.append(zygote)
        self._close_idle_retired()

    def _close_idle_retired(self) -> None:
        for zygote in [z for z in self._retired if not z.children]:
            self._retired.remove(zygote)
            task = asyncio.get_running_loop().create_task(zygote.close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def prepare(self, template: str, env: Mapping[str, str]) -> None:
        """Start the zygote a function will need (at deploy) without waiting for its imports."""
        if self._usable([sys.executable, "-m", RUNTIME_MODULE]):
            try:
                await self._zygote(template, sys.executable, env)
            except Exception as exc:  # a deploy never fails because of the fast path
                log.warning("zygote of template '%s' not started at deploy: %s", template, exc)

    async def spawn(self, template: str, argv: list[str], env: dict[str, str], cwd: str,
                    log_path: Path, plan: Plan, env_path: Path) -> ZygoteChild | None:
        """A replica forked by the template's zygote, or None when the caller should start a plain process.

        ``env`` is written to ``env_path`` (0600) for the child to read; the zygote never sees it.
        """
        if not self._usable(argv):
            return None
        zygote = None
        try:
            zygote = await self._zygote(template, argv[0], env)
            if zygote is None:
                return None
            write_private_json(env_path, env)
            return await zygote.spawn(argv[3:], str(env_path), cwd, str(log_path), plan)
        except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
            log.warning("zygote of template '%s' could not start a replica (%s); starting a plain process",
                        template, exc)
            with contextlib.suppress(OSError):  # the plain process gets its environment directly
                env_path.unlink()
            if zygote is not None and not zygote.alive:  # died before answering: do not crash-loop it
                self._failed_until[zygote.key] = time.monotonic() + RETRY_AFTER
            return None
        finally:
            self._close_idle_retired()

    def pids(self) -> list[int]:
        """The zygote processes running now (for status and tests)."""
        return [z.proc.pid for z in [*self._zygotes.values(), *self._retired] if z.proc and z.alive]

    async def close(self) -> None:
        """Stop every zygote (and, through them, any replica still running): nothing outlives the gateway."""
        self._closed = True
        zygotes = [*self._zygotes.values(), *self._retired]
        self._zygotes.clear()
        self._retired.clear()
        await asyncio.gather(*(z.close() for z in zygotes), return_exceptions=True)
