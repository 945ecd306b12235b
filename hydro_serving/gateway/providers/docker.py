"""The Docker provider: each replica is a container of the function's image (built by ``hydro build``).

Only "run one replica" lives here; scale to zero, draining and crash handling stay in the scaler,
exactly as for the local provider. Any engine speaking the Docker Engine API works (Docker, podman).

* **Network.** ``HYDRO_DOCKER_NETWORK=host`` (the default) runs containers in the host's network
  namespace, the runtime listening on a free port of 127.0.0.1 (podman's default, and Linux Docker).
  Any other value names a Docker network (``bridge``, a user network): the runtime listens on 8080
  inside and the port is published on 127.0.0.1 only; loopback URLs handed to the container (the
  gateway for routers, a local S3 endpoint) are rewritten to ``host.docker.internal``.
* **Environment.** Explicit, never the gateway's: :func:`~hydro_serving.replica.environment.replica_environment`
  (the function's ``environment_file``s and ``environment``, runtime limits the operator set, and for a
  function that loads a store model ``HYDRO_STORE`` with the endpoint/region settings and read-only
  credentials only if the operator gives replicas some, ``HYDRO_REPLICA_AWS_*``) over the image's own
  ``ENV``, plus the address. A ``file://`` store is mounted read-only at the same path.
* **Pinned models the gateway has cached.** When the deploy pinned a version and the gateway's own
  cache (``HYDRO_CACHE``) holds it intact, that version's folder and its state file, and nothing
  else of the cache, are mounted read-only under :data:`SEED_DIR` (``HYDRO_CACHE_SEED``), so a new
  container serves it with no request to the store (issue 14 point 1; it keeps working with S3 down).
* **Secrets.** Declared ``secrets:`` are copied (0600, owned by the image's user, uid 10001) into
  ``<state>/functions/<name>/secrets`` and mounted read-only at ``/var/openfaas/secrets``
  (``HYDRO_SECRETS_DIR``), as on Knative: only the ones it declared.
* **Logs.** A follower thread per container appends its output to ``<state>/logs/<function>.log``
  (the local provider's layout), so ``hydro logs`` still shows a replica after scale to zero removed
  its container; ``exit_cause`` uses the container's own last lines, captured when it exits.
* **Cleanup.** Containers carry ``hydro.function``, ``hydro.replica`` and ``hydro.gateway`` (a hash of
  the state directory) labels; a restarted gateway removes what a killed one left, ``close()`` the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hydro_serving.errors import BadRequest, ConfigError, HydroError, MissingExtra, ValidationError
from hydro_serving.gateway import secrets
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.providers.base import Provider, Replica, ReplicaStartError, next_replica_id
from hydro_serving.gateway.providers.local import _drop_undeclared_pin, _trust_environment, last_error_line
from hydro_serving.gateway.providers.logfile import open_private_log, read_log_lines
from hydro_serving.replica import contract
from hydro_serving.replica.envfile import read_env_file
from hydro_serving.replica.environment import replica_environment
from hydro_serving.stack import FunctionSpec
from hydro_serving.store.cache import SEED_ENV

LABEL_FUNCTION = "hydro.function"
LABEL_REPLICA = "hydro.replica"
LABEL_GATEWAY = "hydro.gateway"
CONTAINER_PORT = contract.CONTAINER_PORT  # the images' HYDRO_PORT default (templates/*/Dockerfile)
CONTAINER_USER = (10001, 10001)  # the user function images run as (builder/Dockerfile.template)
HOST_ALIAS = "host.docker.internal"
EXIT_LOG_LINES = 200
WAIT_RETRY_SECONDS = 1.0
FOLLOWER_JOIN_SECONDS = 5.0
SEED_DIR = "/var/lib/hydro/pinned-model"  # where a container sees the gateway's cache entry of its pinned version


class ImageNotBuilt(BadRequest):
    """The function's image is not in the engine: the user has to build it before deploying."""

    code = "image_not_found"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def gateway_label(state_dir: Path) -> str:
    """The ``hydro.gateway`` label value: stable for a state directory, so a restarted gateway finds
    (and removes) the containers a killed one left, and two gateways never touch each other's."""
    return hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]


def function_image(spec: FunctionSpec) -> str:
    """The image ``hydro build`` tags for ``spec`` (one definition: the builder's)."""
    from hydro_serving.builder.context import default_image

    return default_image(spec)


_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T|m|g|b)?$")
_MEMORY_UNITS = {None: 1, "b": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
                 "m": 1024**2, "g": 1024**3,  # docker's own -m 512m / 1g spelling
                 "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def container_resources(spec: FunctionSpec) -> dict[str, Any]:
    """``limits`` (Kubernetes quantities, as Knative reads them) as docker ``mem_limit``/``nano_cpus``.

    Raises a 400 naming ``limits.memory``/``limits.cpu`` so a typo fails the deploy, not every start.
    """
    out: dict[str, Any] = {}
    memory, cpu = spec.limits.get("memory"), spec.limits.get("cpu")
    if memory is not None:
        match = _MEMORY.match(str(memory).strip())
        if not match or float(match.group(1)) <= 0:
            raise ValidationError(f"limits.memory must be a quantity such as 256Mi or 1Gi, got {memory!r}",
                                  field="limits.memory", function=spec.name)
        out["mem_limit"] = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])
    if cpu is not None:
        text = str(cpu).strip()
        try:
            cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            cores = 0.0
        if cores <= 0:
            raise ValidationError(f"limits.cpu must be cores (0.5) or millicores (500m), got {cpu!r}",
                                  field="limits.cpu", function=spec.name)
        out["nano_cpus"] = int(cores * 1e9)
    return out


def to_host_alias(url: str) -> str:
    """A loopback URL as a container on a bridge network reaches it (``host.docker.internal``)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return url
    netloc = HOST_ALIAS + (f":{parts.port}" if parts.port else "")
    if parts.username:
        netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


class DockerProvider(Provider):
    """Replicas as containers; the engine is reached lazily (docker SDK, the ``docker`` extra)."""

    name = "docker"

    def __init__(self, config: GatewayConfig, network: str | None = None) -> None:
        import importlib.util

        if importlib.util.find_spec("docker") is None:  # fail at `hydro gateway --provider docker`, not at deploy
            raise MissingExtra("the docker provider needs the Python package 'docker' (the Docker SDK for Python; "
                               "the engine is found through DOCKER_HOST); install it with: "
                               "pip install 'hydro-serving[docker]'", field="provider")
        self.config = config
        # an explicit argument, then the config (once the CLI has --docker-network), then the environment
        self.network = (network or getattr(config, "docker_network", None) or os.environ.get("HYDRO_DOCKER_NETWORK")
                        or "host")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", self.network):
            raise ConfigError(f"HYDRO_DOCKER_NETWORK must be 'host' or a docker network name, got {self.network!r}",
                              field="HYDRO_DOCKER_NETWORK")
        self.gateway_label = gateway_label(config.state_dir)
        self.logs_dir = config.state_dir / "logs"
        self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._containers: dict[str, Any] = {}  # replica id -> docker Container
        self._exits: dict[str, asyncio.Future[int | None]] = {}
        self._followers: dict[str, threading.Thread] = {}

    # ---- the engine ------------------------------------------------------------------------------

    def _engine(self) -> Any:
        """The docker client, connected on first use; a fresh gateway removes a killed one's leftovers."""
        with self._client_lock:
            if self._client is None:
                from hydro_serving.builder.images import connect

                client = connect(timeout=10)
                self._remove_labelled(client)
                self._client = client
            return self._client

    def _remove_labelled(self, client: Any) -> None:
        for container in client.containers.list(all=True, sparse=True,
                                               filters={"label": f"{LABEL_GATEWAY}={self.gateway_label}"}):
            with contextlib.suppress(Exception):  # already gone, or being removed by the engine
                container.remove(force=True)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking SDK call off the event loop, on this provider's own small pool
        (so long engine calls never starve the loop's default executor)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="hydro-docker")
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # ---- deployment hooks --------------------------------------------------------------------------

    def check(self, spec: FunctionSpec) -> None:
        """Refuse what can be judged without the engine: bad env files, missing secrets, malformed limits."""
        for i, env_file in enumerate(spec.environment_file):
            field = f"hydro.environment_file[{i}]"
            if not Path(env_file).is_file():
                raise ValidationError(f"environment file {env_file} does not exist on the gateway's machine",
                                      field=field, function=spec.name)
            try:
                read_env_file(env_file, field=field)
            except HydroError as exc:
                raise ValidationError(exc.message, field=field, function=spec.name) from None
        secrets.check_declared(self.config.state_dir, spec.secrets, spec.name)
        container_resources(spec)

    async def deploy(self, spec: FunctionSpec, generation: int) -> None:
        """Make sure the image is there: replicas start from it, and a missing one is the user's to build."""
        image = function_image(spec)
        docker = _docker()
        try:
            await self._call(lambda: self._engine().images.get(image))
        except docker.errors.ImageNotFound:
            raise ImageNotBuilt(f"image {image} of function '{spec.name}' is not in the Docker engine; build it "
                                f"first with: hydro build --filter {spec.name} (or push it and pull it on this host)",
                                field="image", function=spec.name, details={"image": image}) from None

    # ---- replicas ----------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def secrets_path(self, name: str) -> Path:
        return self.config.state_dir / "functions" / name / "secrets"

    def _secrets_dir(self, spec: FunctionSpec) -> Path | None:
        """The declared secrets, copied for the container's user (None: none declared)."""
        target = self.secrets_path(spec.name)
        if not spec.secrets:
            secrets.remove_materialized(target)
            return None
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            return secrets.materialize(self.config.state_dir, spec.secrets, target, CONTAINER_USER)
        except (ValidationError, OSError) as exc:
            raise ReplicaStartError(f"cannot start a replica of '{spec.name}': {exc}", function=spec.name) from None

    def _environment(self, spec: FunctionSpec, port: int) -> dict[str, str]:
        host_network = self.network == "host"
        platform = {
            **self.replica_credentials(spec.name),  # the gateway's additions (a router's key: auth)
            contract.GATEWAY_URL_ENV: self.config.url,
            contract.HOST_ENV: "127.0.0.1" if host_network else "0.0.0.0",  # published on 127.0.0.1 only
            contract.PORT_ENV: str(port if host_network else CONTAINER_PORT),
        }
        if spec.secrets:
            platform[contract.SECRETS_DIR_ENV] = contract.CONTAINER_SECRETS_DIR
        platform.update(_trust_environment(spec, self.config))  # model trust (store part): the deploy's pin, keys
        try:
            env = replica_environment(spec, operator=os.environ, platform=platform, base=False)
            _drop_undeclared_pin(env, platform)
        except HydroError as exc:
            raise ReplicaStartError(f"cannot prepare the environment of '{spec.name}': {exc.message}",
                                    function=spec.name) from None
        if not host_network:
            for key in ("HYDRO_GATEWAY_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
                if env.get(key):
                    env[key] = to_host_alias(env[key])
        return env

    def _pinned_seed(self, spec: FunctionSpec, env: dict[str, str]) -> dict[str, dict[str, str]]:
        """Read-only mounts of the gateway's cache entry for the deploy's pinned version ({} when none).

        Only that version's folder and its state file: never the cache's other models, its blobs, or
        anything with a credential. The entry is checked here as the replica will (pin, signature,
        every file's stat or sha256), so a damaged entry is not handed over; the replica checks again.
        """
        env.pop(SEED_ENV, None)  # the platform's word only, never the function's own setting
        store_url = env.get(contract.STORE_ENV)
        if not spec.model or not store_url or not env.get(contract.MODEL_PIN_ENV):
            return {}
        from hydro_serving.store.cache import ModelCache, default_cache_dir
        from hydro_serving.store.trust import TrustPolicy

        policy = TrustPolicy.from_env(env)
        assert policy.pin is not None
        cache = ModelCache(default_cache_dir(), store_url)
        name, version = policy.pin.name, policy.pin.version
        try:
            tree = cache.trusted(name, version, policy)
        except (OSError, HydroError):
            tree = None
        if tree is None:
            return {}
        seed = ModelCache(Path(SEED_DIR), store_url)
        state = tree.parent / f"{tree.name}.state.json"
        env[SEED_ENV] = SEED_DIR
        return {str(tree): {"bind": str(seed.tree(name, version)), "mode": "ro"},
                str(state): {"bind": str(seed.tree(name, version).parent / state.name), "mode": "ro"}}

    def _run_options(self, spec: FunctionSpec, replica: Replica, port: int) -> dict[str, Any]:
        labels = {**spec.labels, LABEL_FUNCTION: spec.name, LABEL_REPLICA: replica.id,
                  LABEL_GATEWAY: self.gateway_label}
        environment = self._environment(spec, port)
        volumes: dict[str, dict[str, str]] = self._pinned_seed(spec, environment)
        options: dict[str, Any] = {
            "name": f"hydro-{self.gateway_label}-{replica.id}",
            "detach": True,
            "labels": labels,
            "environment": environment,
            "network_mode": self.network if self.network == "host" else None,
            **container_resources(spec),
        }
        if self.network != "host":
            options.update(network=self.network, ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)},
                           extra_hosts={HOST_ALIAS: "host-gateway"})
        store = os.environ.get("HYDRO_STORE", "")
        if store.startswith("file://") and Path(store[len("file://"):]).is_dir():
            volumes[store[len("file://"):]] = {"bind": store[len("file://"):], "mode": "ro"}
        secrets_dir = self._secrets_dir(spec)
        if secrets_dir is not None:
            volumes[str(secrets_dir)] = {"bind": contract.CONTAINER_SECRETS_DIR, "mode": "ro"}
        if volumes:
            options["volumes"] = volumes
        if spec.readonly_root_filesystem:
            options.update(read_only=True, tmpfs={"/tmp": "mode=1777", "/home/app/.cache": "mode=1777"})
        return {k: v for k, v in options.items() if v is not None}

    async def start_replica(self, spec: FunctionSpec, generation: int) -> Replica:
        image = function_image(spec)
        port = _free_port()
        replica = Replica(id=next_replica_id(spec.name), function=spec.name, endpoint=f"http://127.0.0.1:{port}",
                          generation=generation, started_at=time.monotonic())
        options = self._run_options(spec, replica, port)
        docker = _docker()
        try:
            container = await self._call(lambda: self._engine().containers.run(image, **options))
        except docker.errors.ImageNotFound:
            raise ReplicaStartError(f"image {image} of function '{spec.name}' is not in the Docker engine; "
                                    f"build it with: hydro build --filter {spec.name}", function=spec.name) from None
        except docker.errors.APIError as exc:
            raise ReplicaStartError(f"cannot start a container of '{spec.name}' from {image}: "
                                    f"{exc.explanation or exc}", function=spec.name) from None
        with contextlib.suppress(Exception):  # the host pid is only informative (status views)
            await self._call(container.reload)
            replica.pid = container.attrs.get("State", {}).get("Pid") or None
        replica.info.update({"container": container.id, "name": options["name"], "image": image, "port": port})
        self._containers[replica.id] = container
        self._follow(replica, container, generation)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        self._exits[replica.id] = future
        threading.Thread(target=self._wait_thread, args=(replica, container, loop, future),
                         name=f"hydro-wait-{replica.id}", daemon=True).start()
        return replica

    def _follow(self, replica: Replica, container: Any, generation: int) -> None:
        """Append the container's output to the function's log file, line by line, until it ends."""
        path = self.log_path(replica.function)
        with open_private_log(path) as log:
            log.write(f"[hydro] {time.strftime('%Y-%m-%dT%H:%M:%S')} replica {replica.id} starting in container "
                      f"{container.short_id} on port {replica.info['port']} (generation {generation})\n".encode())

        def run() -> None:
            with contextlib.suppress(Exception), open(path, "ab") as log:  # ends with the container (or the engine)
                pending = b""
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    *lines, pending = (pending + chunk).split(b"\n")
                    if lines:
                        log.write(b"".join(line + b"\n" for line in lines))
                        log.flush()
                if pending:
                    log.write(pending + b"\n")

        thread = threading.Thread(target=run, name=f"hydro-logs-{replica.id}", daemon=True)
        self._followers[replica.id] = thread
        thread.start()

    def _wait_thread(self, replica: Replica, container: Any, loop: asyncio.AbstractEventLoop,
                     future: asyncio.Future[int | None]) -> None:
        """Block on the engine until the container ends, then record its code and last lines (crash cause)."""
        docker = _docker()
        code: int | None = None
        while True:
            try:
                code = int(container.wait()["StatusCode"])
                break
            except docker.errors.NotFound:
                break
            except Exception:  # a read timeout on a long-lived replica, or a hiccup: look before waiting again
                try:
                    container.reload()
                except docker.errors.NotFound:
                    break
                except Exception:
                    time.sleep(WAIT_RETRY_SECONDS)
                    continue
                if container.status in ("exited", "dead", "stopped"):
                    code = container.attrs.get("State", {}).get("ExitCode")
                    break
        with contextlib.suppress(Exception):
            replica.info["exit_log"] = container.logs(tail=EXIT_LOG_LINES).decode(errors="replace")
        replica.info["exit_code"] = code
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(code))

    async def stop_replica(self, replica: Replica, grace: float) -> None:
        """SIGTERM (the runtime drains), SIGKILL after ``grace``; then remove the container."""
        container = self._containers.get(replica.id)
        if container is None:
            return
        docker = _docker()
        try:
            with contextlib.suppress(docker.errors.NotFound):
                await self._call(container.stop, timeout=max(0, round(grace)))
            exited = self._exits.get(replica.id)
            if exited is not None:
                await asyncio.wait({exited}, timeout=grace + 10)
            follower = self._followers.get(replica.id)
            if follower is not None:  # let the last lines reach the log file before the container goes
                await self._call(follower.join, FOLLOWER_JOIN_SECONDS)
            with contextlib.suppress(docker.errors.NotFound):
                await self._call(container.remove, force=True)
        finally:
            self._containers.pop(replica.id, None)
            self._followers.pop(replica.id, None)
            self._exits.pop(replica.id, None)

    def is_alive(self, replica: Replica) -> bool:
        """No engine call: the waiter thread flips the exit future the moment the engine reports the end."""
        exited = self._exits.get(replica.id)
        return replica.id in self._containers and exited is not None and not exited.done()

    async def wait_exit(self, replica: Replica) -> int | None:
        exited = self._exits.get(replica.id)
        if exited is None:
            return None
        return await asyncio.shield(exited)

    def exit_cause(self, replica: Replica) -> str:
        code = replica.info.get("exit_code")
        status = f"container exited with status {code}" if code is not None else "container exited"
        if code == 137:
            status += " (killed)"
        line = last_error_line(replica.info.get("exit_log", ""))
        return f"{status}: {line}" if line else status

    async def logs(self, name: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[str]:
        """Lines of every replica of ``name`` so far (from the log file the followers write), optionally followed."""
        async for line in read_log_lines(self.log_path(name), tail, follow):
            yield line

    async def close(self) -> None:
        """Remove every container this gateway labelled (the scaler stopped them; this is the backstop)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._call(self._remove_labelled, self._client)
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self._containers.clear()
        self._followers.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _docker() -> Any:
    """The docker SDK (the ``docker`` extra), imported when a docker provider first needs it."""
    from hydro_serving.errors import require_extra

    return require_extra("docker", "docker")
