"""The local provider: each replica is a ``python -m hydro_serving.runtime`` process on 127.0.0.1.

Replicas run in their own process group (so a stop reaches every child) and, on Linux, die with
the gateway (``PR_SET_PDEATHSIG``) so a killed gateway leaves no orphans. Their stdout/stderr are
appended to ``<state>/logs/<function>.log``, which ``GET /system/logs`` and ``hydro logs`` read.
Declared secrets are copied from ``<state>/secrets/`` into ``<state>/functions/<name>/secrets/``
(only those, mode 0600) and passed as ``HYDRO_SECRETS_DIR``; see :mod:`hydro_serving.gateway.secrets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from hydro_serving.errors import HydroError, ValidationError
from hydro_serving.gateway import secrets
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.providers.base import Provider, Replica, ReplicaStartError, next_replica_id
from hydro_serving.gateway.providers.logfile import LOG_TAIL_BYTES, read_log_lines
from hydro_serving.gateway.providers.spawner import ZygoteChild, ZygoteSpawner
from hydro_serving.runtime.venvs import isolation_mode, replica_python
from hydro_serving.stack import FunctionSpec

log = logging.getLogger("hydro.gateway")



def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the gateway dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` prefix, quotes and ``#`` comments allowed), like docker's --env-file."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


_CAUSE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*|error: .*)$")


def last_error_line(text: str) -> str:
    """The line that says why a process died: the last exception line (``XxxError: ...``) of its
    output, else its last non-blank line (a traceback is often followed by a supervisor's epilogue)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[hydro]")]
    for line in reversed(lines):
        if _CAUSE.match(line):
            return line[:500]
    return lines[-1][:500] if lines else ""


class LocalProvider(Provider):
    """Replicas as local processes; the spec each one serves is ``<state>/functions/<name>/spec.json``."""

    name = "local"

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.functions_dir = config.state_dir / "functions"
        self.logs_dir = config.state_dir / "logs"
        self.functions_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, asyncio.subprocess.Process | ZygoteChild] = {}
        self.spawner = ZygoteSpawner(config.state_dir / "zygotes")  # pre-imported templates (HYDRO_ZYGOTE=0: off)
        self._venv_builds: set[asyncio.Task[str]] = set()

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
            if not Path(env_file).is_file():
                raise ValidationError(f"environment file {env_file} does not exist",
                                      field=f"hydro.environment_file[{i}]", function=spec.name)
        secrets.check_declared(self.config.state_dir, spec.secrets, spec.name)

    def spec_path(self, name: str) -> Path:
        return self.functions_dir / name / "spec.json"

    def secrets_path(self, name: str) -> Path:
        return self.functions_dir / name / "secrets"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    async def deploy(self, spec: FunctionSpec, generation: int) -> None:
        """Write the spec atomically: running replicas already loaded theirs, new ones read the new one."""
        path = self.spec_path(spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(spec.to_dict(), indent=2))
        os.replace(tmp, path)
        if isolation_mode(spec.environment) is not None:
            # build the function's venv now, so its first cold start does not pay for pip (errors: logged
            # here, and reported to callers by start_replica, which builds it if this did not finish)
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(replica_python, spec))
            self._venv_builds.add(task)
            task.add_done_callback(self._venv_built)
            return
        await self.spawner.prepare(spec.lang, self._environment(spec))  # its imports run while we wait

    def _venv_built(self, task: asyncio.Task[str]) -> None:
        self._venv_builds.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("building a function's virtual environment failed: %s", task.exception())

    async def remove(self, name: str) -> None:
        secrets.remove_materialized(self.secrets_path(name))
        path = self.spec_path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    # ---- replicas --------------------------------------------------------------------------------

    def _secrets_dir(self, spec: FunctionSpec) -> Path | None:
        """The replica's secrets folder, refreshed from the store at each start (None: none declared)."""
        target = self.secrets_path(spec.name)
        if not spec.secrets:
            secrets.remove_materialized(target)
            return None
        try:
            return secrets.materialize(self.config.state_dir, spec.secrets, target)
        except (ValidationError, OSError) as exc:
            raise ReplicaStartError(f"cannot start a replica of '{spec.name}': {exc}", function=spec.name) from None

    def _environment(self, spec: FunctionSpec, secrets_dir: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(secrets.ENV_VAR, None)  # the gateway's own, if any, is not the function's
        for env_file in spec.environment_file:
            env.update(read_env_file(Path(env_file)))
        env.update(spec.environment)
        env.update({
            "HYDRO_GATEWAY_URL": self.config.url,
            "HYDRO_FUNCTION_NAME": spec.name,
            "HYDRO_FUNCTION_SPEC": str(self.spec_path(spec.name)),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.replica_credentials(spec.name))  # a router's key for its stages (auth: keys)
        # model trust (store part): the deploy's pin and the gateway's trusted keys, never the function's own
        from hydro_serving.store.trust import PIN_ENV, replica_trust_environment

        env.pop(PIN_ENV, None)
        env.update(replica_trust_environment(spec.annotations, getattr(self.config, "trusted_keys", "")))
        if secrets_dir is not None:
            env[secrets.ENV_VAR] = str(secrets_dir)
        return env

    async def start_replica(self, spec: FunctionSpec, generation: int) -> Replica:
        spec_path = self.spec_path(spec.name)
        if not spec_path.exists():
            await self.deploy(spec, generation)
        secrets_dir = self._secrets_dir(spec)
        port = _free_port()
        replica = Replica(id=next_replica_id(spec.name), function=spec.name, endpoint=f"http://127.0.0.1:{port}",
                          generation=generation, started_at=time.monotonic())
        log_path = self.log_path(spec.name)
        try:  # the gateway's interpreter, or the function's own venv when HYDRO_ISOLATE asks for one
            python = await asyncio.to_thread(replica_python, spec)
        except HydroError as exc:
            raise ReplicaStartError(f"cannot prepare the environment of '{spec.name}': {exc.message}",
                                    function=spec.name) from None
        argv = [python, "-m", "hydro_serving.runtime", "--spec", str(spec_path),
                "--port", str(port), "--host", "127.0.0.1"]
        cwd = spec.handler if spec.handler and Path(spec.handler).is_dir() else str(self.config.state_dir)
        with open(log_path, "ab") as log:
            log.write(f"[hydro] {time.strftime('%Y-%m-%dT%H:%M:%S')} replica {replica.id} starting on port {port} "
                      f"(generation {generation})\n".encode())
            log.flush()
            replica.info["log_offset"] = log.tell()
            env = self._environment(spec, secrets_dir)
            proc = await self.spawner.spawn(spec.lang, argv, env, cwd, log_path)  # None: a fresh process
            try:
                proc = proc or await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                    env=env, cwd=cwd, start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            except OSError as exc:
                raise ReplicaStartError(f"cannot start a replica of '{spec.name}': {exc.strerror}",
                                        function=spec.name) from None
        replica.pid = proc.pid
        replica.info.update({"pgid": proc.pid, "port": port, "log": str(log_path)})
        self._procs[replica.id] = proc
        return replica

    async def stop_replica(self, replica: Replica, grace: float) -> None:
        proc = self._procs.get(replica.id)
        if proc is None:
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
