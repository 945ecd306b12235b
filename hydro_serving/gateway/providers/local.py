"""The local provider: each replica is a sandboxed ``python -m hydro_serving.runtime`` process on 127.0.0.1.

Replicas run in their own process group (so a stop reaches every child) and, on Linux, die with
the gateway (``PR_SET_PDEATHSIG``) so a killed gateway leaves no orphans. Their stdout/stderr are
appended to ``<state>/logs/<function>.log``, which ``GET /system/logs`` and ``hydro logs`` read.

A replica is a stranger (:mod:`hydro_serving.replica.sandbox`): it gets an explicit environment
(:func:`~hydro_serving.replica.environment.replica_environment`, never the gateway's), runs as its
function's own uid (gateway as root) or in a user namespace, and sees only its function folder
``<state>/functions/<name>/`` (its ``spec.json``, ``secrets/`` with the 0600 copies of the
secrets it declared, a writable ``home/`` that is its ``HOME``/``TMPDIR``, its model cache) and
what it needs to run (interpreter, package, templates, handler folder): not the rest of the
state directory, nor other functions' folders or logs.

How the gateway reaches a replica (issue 17): on Linux a replica listens on a unix socket,
``<state>/functions/<name>/run/<n>.sock`` (replica ``<name>-<n>``), chosen here and never by a
template. ``run/`` is owned by the function's uid (0700) inside its 0750 function folder, and the
socket is created 0600, so another function's uid cannot reach it (and in ``userns`` mode cannot even see the state
directory); the gateway checks that the listener is the replica's own process
(:mod:`hydro_serving.gateway.upstream`). ``HYDRO_REPLICA_TRANSPORT=tcp`` (the gateway's environment)
forces a port on 127.0.0.1 instead, for debugging with curl; so does a socket path longer than the
kernel's limit (logged).

Models from the store: when the operator gives replicas read-only store credentials
(``HYDRO_REPLICA_AWS_ACCESS_KEY_ID``/``..._SECRET_ACCESS_KEY``), the replica fetches its model into
its own cache; otherwise the gateway fetches it (sha256-verified) into ``<function>/model-cache``,
a folder the replica can read but not write, so a replica never holds a store credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from hydro_serving.errors import HydroError, ServiceUnavailable, StoreError, ValidationError
from hydro_serving.gateway import secrets
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.providers.base import Provider, Replica, ReplicaStartError, next_replica_id
from hydro_serving.gateway.providers.logfile import LOG_TAIL_BYTES, open_private_log, read_log_lines
from hydro_serving.gateway.providers.spawner import ZygoteChild, ZygoteSpawner
from hydro_serving.gateway.providers.venvs import isolation_mode, replica_python
from hydro_serving.replica import contract, sandbox
from hydro_serving.replica.envfile import read_env_file
from hydro_serving.replica.environment import (
    NO_METADATA_ENV,
    declared_environment,
    replica_environment,
    replica_store_credentials,
    uses_store,
)
from hydro_serving.replica.process import die_with_parent, make_undumpable
from hydro_serving.stack import FunctionSpec

log = logging.getLogger("hydro.gateway")



def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


UNIX, TCP = "unix", "tcp"
RUN_DIR = "run"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its terminating NUL


def replica_transport(environ: dict[str, str] | None = None) -> str:
    """``unix`` (default on Linux) or ``tcp`` from ``HYDRO_REPLICA_TRANSPORT``; anything else is a ConfigError."""
    from hydro_serving.errors import ConfigError

    environ = dict(os.environ) if environ is None else environ
    raw = environ.get(contract.REPLICA_TRANSPORT_ENV, "").strip().lower()
    if not raw:
        return UNIX if sys.platform.startswith("linux") else TCP
    if raw not in (UNIX, TCP):
        raise ConfigError(f"{contract.REPLICA_TRANSPORT_ENV} must be unix or tcp, got {raw!r}",
                          field=contract.REPLICA_TRANSPORT_ENV)
    return raw


def _clear_path(path: Path) -> None:
    """Remove whatever is at ``path`` (a stale socket of a killed gateway's replica, or anything planted)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


# what a local replica inherits from the gateway besides the documented base: where the gateway's own
# code and templates are found (never secrets; a function's own value wins)
GATEWAY_PATHS = ("PYTHONPATH", "HYDRO_TEMPLATES")
MODEL_CACHE = "model-cache"


_CAUSE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*|error: .*)$")


def _share_with_group(target: Path | int, owner: tuple[int, int] | None, mode: int) -> None:
    """Give the function's group (uid mode) read access to a gateway-owned file or folder (``mode``);
    without a per-function user, keep it private to the gateway (0700/0600)."""
    if owner is None:
        mode &= 0o700
    if isinstance(target, int):
        if owner is not None:
            os.fchown(target, -1, owner[1])
        os.fchmod(target, mode)
        return
    if owner is not None:
        os.chown(target, -1, owner[1], follow_symlinks=False)
    os.chmod(target, mode)


def _preexec(plan: sandbox.Plan):  # type: ignore[no-untyped-def]
    """The plain process's ``preexec_fn``: die with the gateway, then enter the sandbox (before exec)."""
    parent = os.getpid()

    def run() -> None:
        try:
            sandbox.enter(plan)
        except OSError as exc:  # the parent only learns "preexec_fn failed": say why in the function's log
            os.write(2, f"error: {exc.strerror or exc}\n".encode())
            raise
        die_with_parent(parent)  # after the uid change, which clears the death signal
    return run


def _trust_environment(spec: FunctionSpec, config: GatewayConfig) -> dict[str, str]:
    """``HYDRO_MODEL_PIN`` (the deploy's pin) and ``HYDRO_TRUSTED_KEYS`` (the gateway's) for a replica."""
    from hydro_serving.store.trust import replica_trust_environment

    return replica_trust_environment(spec.annotations, getattr(config, "trusted_keys", ""))


def _drop_undeclared_pin(env: dict[str, str], platform: dict[str, str]) -> None:
    """A pin is the gateway's word only: a function's own ``HYDRO_MODEL_PIN`` never reaches its replica."""
    if contract.MODEL_PIN_ENV not in platform:
        env.pop(contract.MODEL_PIN_ENV, None)


def _store_url(spec: FunctionSpec) -> str | None:
    """The store a function's model comes from: its own ``HYDRO_STORE`` if it declares one, else the
    gateway's (``HYDRO_STORE`` or its default); None for a function without a store model."""
    if not uses_store(spec):
        return None
    declared = declared_environment(spec).get(contract.STORE_ENV)
    if declared:
        return declared
    from hydro_serving.store.store import default_store_url

    return default_store_url()


def last_error_line(text: str) -> str:
    """The line that says why a process died: the last exception line (``XxxError: ...``) of its
    output, else its last non-blank line (a traceback is often followed by a supervisor's epilogue)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[hydro]")]
    for line in reversed(lines):
        if _CAUSE.match(line):
            return line[:500]
    return lines[-1][:500] if lines else ""


class LocalProvider(Provider):
    """Replicas as local sandboxed processes; the spec each one serves is ``<state>/functions/<name>/spec.json``."""

    name = "local"

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.functions_dir = config.state_dir / "functions"
        self.logs_dir = config.state_dir / "logs"
        for folder in (config.state_dir, self.functions_dir, self.logs_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        self.sandbox = sandbox.sandbox_mode()
        self.uids = sandbox.uid_range() if self.sandbox == sandbox.UID else None
        if self.sandbox == sandbox.OFF:
            log.warning("%s=off: replicas run unsandboxed, as the gateway's user", contract.SANDBOX_ENV)
        elif self.sandbox == sandbox.USERNS:
            make_undumpable()  # same uid as the replicas: keep them out of /proc/<gateway>/environ
        self._procs: dict[str, asyncio.subprocess.Process | ZygoteChild] = {}
        self.spawner = ZygoteSpawner(config.state_dir / "zygotes")  # pre-imported templates (HYDRO_ZYGOTE=0: off)
        self._venv_builds: set[asyncio.Task[str]] = set()
        self.transport = replica_transport()  # read once: a typo stops the gateway at start
        log.info("local replicas listen on %s", "unix sockets" if self.transport == UNIX else "127.0.0.1 ports "
                 f"({contract.REPLICA_TRANSPORT_ENV}=tcp)")

    # ---- deployment hooks ------------------------------------------------------------------------

    def check(self, spec: FunctionSpec) -> None:
        """Local replicas run from source: a handler folder, a model, or a router chain is needed."""
        if not (spec.handler or spec.model or spec.is_router):
            raise ValidationError(f"function '{spec.name}' has neither a handler folder nor a model: the local "
                                  "provider runs functions from source (send the 'hydro' spec, as hydro deploy does)",
                                  field="hydro.handler", function=spec.name)
        if spec.handler and not Path(spec.handler).is_absolute():
            raise ValidationError(f"hydro.handler must be an absolute path for the local provider, got "
                                  f"'{spec.handler}' (hydro deploy resolves it against the stack folder)",
                                  field="hydro.handler", function=spec.name)
        if spec.handler and not Path(spec.handler).is_dir():
            raise ValidationError(f"handler folder {spec.handler} does not exist on the gateway's machine",
                                  field="hydro.handler", function=spec.name)
        for i, env_file in enumerate(spec.environment_file):
            field = f"hydro.environment_file[{i}]"
            if not Path(env_file).is_file():
                raise ValidationError(f"environment file {env_file} does not exist", field=field,
                                      function=spec.name)
            try:
                read_env_file(env_file, field=field)
            except HydroError as exc:
                raise ValidationError(exc.message, field=field, function=spec.name) from None
        secrets.check_declared(self.config.state_dir, spec.secrets, spec.name)

    def function_dir(self, name: str) -> Path:
        return self.functions_dir / name

    def spec_path(self, name: str) -> Path:
        return self.function_dir(name) / "spec.json"

    def secrets_path(self, name: str) -> Path:
        return self.function_dir(name) / "secrets"

    def home_path(self, name: str) -> Path:
        return self.function_dir(name) / "home"

    def run_path(self, name: str) -> Path:
        return self.function_dir(name) / RUN_DIR

    def socket_path(self, name: str, replica_id: str) -> Path | None:
        """Where a replica of ``name`` listens, or None for TCP (forced, or a path too long for a socket)."""
        if self.transport != UNIX:
            return None
        # the replica's number only (its id is <name>-<n>): the folder already names the function, and
        # sun_path is short
        path = self.run_path(name) / f"{replica_id.rsplit('-', 1)[-1]}.sock"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            log.warning("function %s: socket path %s is longer than %d bytes: this replica listens on TCP "
                        "(use a shorter state directory)", name, path, MAX_SOCKET_PATH)
            return None
        return path

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    async def deploy(self, spec: FunctionSpec, generation: int) -> None:
        """Write the spec atomically: running replicas already loaded theirs, new ones read the new one."""
        path = self.spec_path(spec.name)
        self._function_folder(spec.name)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(spec.to_dict(), indent=2))
            _share_with_group(fh.fileno(), self._owner(spec.name), 0o640)  # uid mode: its replicas read it
        os.replace(tmp, path)
        if isolation_mode(spec.environment) is not None:
            # build the function's venv now, so its first cold start does not pay for pip (errors: logged
            # here, and reported to callers by start_replica, which builds it if this did not finish)
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(replica_python, spec))
            self._venv_builds.add(task)
            task.add_done_callback(self._venv_built)
            return
        with contextlib.suppress(HydroError):  # a bad env file is reported at start, as before
            await self.spawner.prepare(spec.lang, self._environment(spec))  # its imports run while we wait

    def _venv_built(self, task: asyncio.Task[str]) -> None:
        self._venv_builds.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("building a function's virtual environment failed: %s", task.exception())

    async def remove(self, name: str) -> None:
        """Forget the function's folder: spec, secrets copies, its home and model cache (rmtree never
        follows a link the replica may have planted in its home)."""
        secrets.remove_materialized(self.secrets_path(name))
        with contextlib.suppress(FileNotFoundError):
            self.spec_path(name).unlink()
        await asyncio.to_thread(shutil.rmtree, self.function_dir(name), True)

    # ---- the sandbox -------------------------------------------------------------------------------

    def _owner(self, name: str) -> tuple[int, int] | None:
        """The (uid, gid) replicas of ``name`` run as in ``uid`` mode: stable, one per function,
        recorded in ``<state>/replica-uids.json`` so a restarted gateway gives the same ones."""
        if self.uids is None:
            return None
        path = self.config.state_dir / "replica-uids.json"
        try:
            table: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        uid = table.get(name)
        if uid is None:
            used = set(table.values())
            uid = next((u for u in range(self.uids[0], self.uids[1] + 1) if u not in used), None)
            if uid is None:
                raise ReplicaStartError(f"no free uid left in {contract.REPLICA_UIDS_ENV} "
                                        f"({self.uids[0]}-{self.uids[1]}) for '{name}'", function=name)
            table[name] = uid
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        return uid, uid

    def _function_folder(self, name: str) -> Path:
        """``<state>/functions/<name>``: the gateway's (root), readable by the function's group only
        (0750 in uid mode), with ``home/`` and ``home/tmp`` owned by the replica's user (0700)."""
        owner = self._owner(name)
        folder = self.function_dir(name)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _share_with_group(folder, owner, 0o750)
        home = self.home_path(name)
        for sub in (home, home / "tmp", self.run_path(name)):
            sub.mkdir(mode=0o700, exist_ok=True)
            if owner is not None:
                os.chown(sub, *owner, follow_symlinks=False)
        return folder

    def _plan(self, spec: FunctionSpec, python: str) -> sandbox.Plan:
        owner = self._owner(spec.name) or (-1, -1)
        from hydro_serving.templates import template_dirs

        readable = sandbox.runtime_paths(python, template_dirs())
        readable.append(str(self.function_dir(spec.name)))
        if spec.handler:
            readable.append(spec.handler)
        if spec.model and spec.model_is_local:
            readable.append(str(Path(spec.model.removeprefix("file://")).expanduser()))
        if spec.is_router and self.config.unix_socket is not None:  # its stages are called through it
            readable.append(str(self.config.unix_socket))
        files = (sandbox.identity_files(self.function_dir(spec.name), owner[0], owner[1], spec.name,
                                        str(self.home_path(spec.name))) if self.sandbox == sandbox.UID else [])
        return sandbox.make_plan(self.sandbox, uid=owner[0], gid=owner[1],
                                 hidden=[str(self.config.state_dir), "/tmp"], readable=readable,
                                 writable=[str(self.home_path(spec.name)), str(self.run_path(spec.name))],
                                 files=files)

    def _secrets_dir(self, spec: FunctionSpec) -> Path | None:
        """The replica's secrets folder, refreshed from the store at each start (None: none declared)."""
        target = self.secrets_path(spec.name)
        if not spec.secrets:
            secrets.remove_materialized(target)
            return None
        try:
            return secrets.materialize(self.config.state_dir, spec.secrets, target, self._owner(spec.name))
        except (ValidationError, OSError) as exc:
            raise ReplicaStartError(f"cannot start a replica of '{spec.name}': {exc}", function=spec.name) from None

    def _prefetch(self, spec: FunctionSpec) -> tuple[Path, FunctionSpec] | None:
        """Fetch a store model for a replica that gets no store credentials (None: it fetches its own).

        Runs in a thread, with the gateway's credentials, into a folder only the gateway writes; the
        cache verifies every file's sha256. An alias (``iris:latest``) is resolved here, at each start
        as a replica would, and the replica is handed the version it resolved to (it cannot ask the store).
        """
        if not uses_store(spec) or replica_store_credentials(os.environ) or self.sandbox == sandbox.OFF:
            return None
        from hydro_serving.store import fetch_model
        from hydro_serving.store.refs import parse_ref

        cache = self.function_dir(spec.name) / MODEL_CACHE
        cache.mkdir(mode=0o700, exist_ok=True)
        _share_with_group(cache, self._owner(spec.name), 0o750)
        from hydro_serving.store.trust import TrustPolicy

        policy = TrustPolicy.from_env(_trust_environment(spec, self.config))  # what the replica will accept
        tree = Path(fetch_model(spec.model, store_url=_store_url(spec), cache_dir=cache, policy=policy))
        ref = parse_ref(spec.model)
        if ref.pinned or "@" in spec.model or not tree.name.isdigit():
            return cache, spec
        return cache, replace(spec, model=f"{ref.name}:{tree.name}")

    def _replica_spec(self, spec: FunctionSpec, resolved: FunctionSpec) -> Path:
        """The spec file a replica reads: the deployed one, or one with the model version resolved."""
        if resolved.model == spec.model:
            return self.spec_path(spec.name)
        path = self.function_dir(spec.name) / "spec-resolved.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(resolved.to_dict(), indent=2))
            _share_with_group(fh.fileno(), self._owner(spec.name), 0o640)
        os.replace(tmp, path)
        return path

    def _environment(self, spec: FunctionSpec, secrets_dir: Path | None = None,
                     model_cache: Path | None = None, spec_path: Path | None = None) -> dict[str, str]:
        home = self.home_path(spec.name)
        platform = {
            **self.replica_credentials(spec.name),  # the gateway's additions (a router's key: auth)
            contract.GATEWAY_URL_ENV: self.config.url,
            contract.FUNCTION_SPEC_ENV: str(spec_path or self.spec_path(spec.name)),
            # a router beside a gateway that listens on a unix socket calls its stages through it
            **({contract.GATEWAY_TRANSPORT_ENV: self.config.unix_url}
               if spec.is_router and self.config.unix_url is not None else {}),
            **_trust_environment(spec, self.config),  # model trust (store part): the deploy's pin, trusted keys
        }
        if secrets_dir is not None:
            platform[contract.SECRETS_DIR_ENV] = str(secrets_dir)
        if model_cache is not None:
            platform.update({contract.CACHE_ENV: str(model_cache), NO_METADATA_ENV: "true"})
        elif uses_store(spec) and self.sandbox != sandbox.OFF:
            platform[contract.CACHE_ENV] = str(home / "cache")
        env = replica_environment(spec, operator=os.environ, home=str(home), tmpdir=str(home / "tmp"),
                                  store=_store_url(spec),
                                  platform=platform)
        _drop_undeclared_pin(env, platform)
        for key in GATEWAY_PATHS:
            if os.environ.get(key) and key not in env:
                env[key] = os.environ[key]
        return env

    async def start_replica(self, spec: FunctionSpec, generation: int) -> Replica:
        spec_path = self.spec_path(spec.name)
        if not spec_path.exists():
            await self.deploy(spec, generation)
        self._function_folder(spec.name)
        secrets_dir = self._secrets_dir(spec)
        replica_id = next_replica_id(spec.name)
        sock = self.socket_path(spec.name, replica_id)
        port = 0 if sock is not None else _free_port()
        replica = Replica(id=replica_id, function=spec.name,
                          endpoint="http://localhost" if sock is not None else f"http://127.0.0.1:{port}",
                          generation=generation, started_at=time.monotonic(),
                          socket=str(sock) if sock is not None else None)
        if sock is not None:
            _clear_path(sock)  # a killed gateway's replica of the same id left it (gunicorn refuses a non-socket)
        log_path = self.log_path(spec.name)
        try:  # the gateway's interpreter, or the function's own venv when HYDRO_ISOLATE asks for one
            python = await asyncio.to_thread(replica_python, spec)
            prefetched = await asyncio.to_thread(self._prefetch, spec)
            model_cache = prefetched[0] if prefetched else None
            if prefetched:
                spec_path = self._replica_spec(spec, prefetched[1])
            env = self._environment(spec, secrets_dir, model_cache, spec_path)
        except StoreError as exc:  # as when a replica cannot reach the store itself: 503, a retry may work
            logging.getLogger("hydro.gateway").warning("function %s: the model could not be fetched for a replica: %s",
                                                       spec.name, exc.message)
            raise ServiceUnavailable(f"function '{spec.name}' cannot load its model: the model store is "
                                     "unavailable; retry later", retry_after=5, function=spec.name,
                                     details={"cause": "model_store"}) from None
        except HydroError as exc:
            raise ReplicaStartError(f"cannot prepare the environment of '{spec.name}': {type(exc).__name__}: "
                                    f"{exc.message}", function=spec.name) from None
        except OSError as exc:  # the gateway's own fetch of the model into the function's cache
            raise ReplicaStartError(f"cannot fetch the model of '{spec.name}': {exc}", function=spec.name) from None
        plan = self._plan(spec, python)
        argv = [python, "-m", "hydro_serving.runtime", "--spec", str(spec_path),
                *(["--unix-socket", str(sock)] if sock is not None else ["--port", str(port), "--host", "127.0.0.1"])]
        cwd = spec.handler if spec.handler and Path(spec.handler).is_dir() else str(self.home_path(spec.name))
        with open_private_log(log_path) as log:
            log.write(f"[hydro] {time.strftime('%Y-%m-%dT%H:%M:%S')} replica {replica.id} starting on "
                      f"{'socket ' + str(sock) if sock is not None else 'port ' + str(port)} "
                      f"(generation {generation})\n".encode())
            log.flush()
            replica.info["log_offset"] = log.tell()
            proc = await self.spawner.spawn(spec.lang, argv, env, cwd, log_path, plan,
                                            self.function_dir(spec.name) / f"replica-env-{replica.id}.json")
            if proc is None and self.sandbox == sandbox.USERNS:  # same uid as its neighbours: start undumpable
                argv = [argv[0], "-m", "hydro_serving.replica.launch", *argv[2:]]
            try:
                proc = proc or await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                    env=env, cwd=cwd, start_new_session=True,
                    preexec_fn=_preexec(plan) if sys.platform.startswith("linux") else None,
                )
            except (OSError, subprocess.SubprocessError, ValueError) as exc:  # preexec failures: SubprocessError
                cause = last_error_line(self.exit_cause_text(spec.name)) if isinstance(
                    exc, subprocess.SubprocessError) else ""
                raise ReplicaStartError(f"cannot start a replica of '{spec.name}': {cause or exc}",
                                        function=spec.name) from None
        replica.pid = proc.pid
        replica.info.update({"pgid": proc.pid, "log": str(log_path), **({"port": port} if sock is None else {})})
        self._procs[replica.id] = proc
        return replica

    async def stop_replica(self, replica: Replica, grace: float) -> None:
        proc = self._procs.get(replica.id)
        if proc is None:
            self._remove_socket(replica)
            return
        try:
            if proc.returncode is None:
                self._signal(replica, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), grace)
                except TimeoutError:
                    self._signal(replica, signal.SIGKILL)
                    await asyncio.wait_for(proc.wait(), 10)
            else:  # the leader is gone; make sure nothing it started lingers
                self._signal(replica, signal.SIGKILL)
        finally:
            self._procs.pop(replica.id, None)
            self._remove_socket(replica)

    def _remove_socket(self, replica: Replica) -> None:
        """A stopped replica's socket goes with it (gunicorn removes it on a clean exit, not on SIGKILL)."""
        if replica.socket is not None:
            _clear_path(Path(replica.socket))

    def _signal(self, replica: Replica, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(replica.info.get("pgid", replica.pid), sig)

    def is_alive(self, replica: Replica) -> bool:
        proc = self._procs.get(replica.id)
        return proc is not None and proc.returncode is None

    async def wait_exit(self, replica: Replica) -> int | None:
        proc = self._procs.get(replica.id)
        if proc is None:
            return None
        return await proc.wait()

    def exit_cause_text(self, name: str) -> str:
        """The end of the function's log, where a replica that could not start said why."""
        try:
            with open(self.log_path(name), "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def exit_cause(self, replica: Replica) -> str:
        path = self.log_path(replica.function)
        try:
            with open(path, "rb") as fh:
                start = max(int(replica.info.get("log_offset", 0)), fh.seek(0, os.SEEK_END) - LOG_TAIL_BYTES)
                fh.seek(start)
                text = fh.read().decode(errors="replace")
        except OSError:
            return "the replica exited"
        proc = self._procs.get(replica.id)
        code = proc.returncode if proc else None
        line = last_error_line(text)
        status = f"exit status {code}" if code is not None else "exited"
        return f"{status}: {line}" if line else status

    async def logs(self, name: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[str]:
        async for line in read_log_lines(self.log_path(name), tail, follow):
            yield line

    async def close(self) -> None:
        for replica_id, proc in list(self._procs.items()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            self._procs.pop(replica_id, None)
        await self.spawner.close()
