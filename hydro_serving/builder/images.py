"""Images from build contexts, through the Docker Engine API (the docker SDK), and pushes to registries.

Any engine that speaks the Docker Engine API works (Docker, podman's system service). Output is
streamed line by line as the engine sends it, because a build that installs scikit-learn takes
minutes and a silent terminal looks hung. A failed build raises :class:`BuildFailed` naming the
step that failed and the last lines of its output, so the CLI can exit non-zero with something
actionable instead of a stack trace.
"""

from __future__ import annotations

import os
import re
import socket
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hydro_serving.builder.context import read_build_info
from hydro_serving.errors import ConfigError, HydroError, require_extra

Echo = Callable[[str], None]
_STEP = re.compile(r"^\s*(Step \d+/\d+ :.*|STEP \d+/\d+:.*|#\d+ \[.*\].*)$")
DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineUnavailable(HydroError):
    """No Docker Engine API answered; the message says where we looked."""

    status = 503
    code = "no_docker_engine"


class BuildFailed(HydroError):
    """The engine ran the build and a step failed; ``details`` has the step and its output."""

    status = 422
    code = "build_failed"


class PushFailed(HydroError):
    status = 502
    code = "push_failed"


def _print(line: str) -> None:
    print(line, flush=True)


def connect(timeout: float = 10.0, operation_timeout: float | None = None) -> Any:
    """A docker client whose engine answered a ping, or :class:`EngineUnavailable` saying what was tried.

    The ping uses ``timeout``; the returned client uses ``operation_timeout`` (default: env
    HYDRO_BUILD_TIMEOUT, else 1800 s) because an engine may stay silent for minutes while it
    uploads a large layer, and a short read timeout would abort a healthy push.
    """
    docker = require_extra("docker", "docker")
    host = os.environ.get("DOCKER_HOST")
    where = f"DOCKER_HOST={host}" if host else f"DOCKER_HOST is not set and {DEFAULT_SOCKET} " + (
        "does not answer" if Path(DEFAULT_SOCKET).exists() else "does not exist")
    if operation_timeout is None:
        try:
            operation_timeout = float(os.environ.get("HYDRO_BUILD_TIMEOUT") or 1800)
        except ValueError:
            raise ConfigError("HYDRO_BUILD_TIMEOUT must be a number of seconds", field="HYDRO_BUILD_TIMEOUT") from None
    try:
        probe = docker.from_env(timeout=int(max(1, timeout)))
        try:
            probe.ping()
        finally:
            probe.close()
    except Exception as exc:  # the SDK raises DockerException, requests' errors or OSError depending on the failure
        raise EngineUnavailable(f"no Docker engine found ({where}): {engine_reason(exc)}",
                                details={"docker_host": host or f"unix://{DEFAULT_SOCKET}"}) from None
    return docker.from_env(timeout=int(max(1, operation_timeout)))


def engine_reason(exc: BaseException) -> str:
    """Why the engine did not answer, as a whole sentence: the OS error at the root of the SDK's chain.

    The SDK wraps a refused connection in three layers of requests/urllib3 text
    (``Error while fetching server API version: HTTPConnectionPool(…): Max retries exceeded …``);
    cutting that at a fixed length stopped the message mid-sentence. The root ``OSError``
    ("Connection refused", "No such file or directory", "Permission denied") is what the user can act on.
    """
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    while queue:
        err = queue.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        if type(err).__module__ == "builtins" and isinstance(err, OSError) and err.strerror:
            return err.strerror
        if isinstance(err, TimeoutError | socket.timeout):
            return "the engine did not answer in time"
        linked = [err.__cause__, err.__context__, getattr(err, "reason", None), *err.args]
        queue.extend(e for e in linked if isinstance(e, BaseException))
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def image_reference(image: str) -> tuple[str, str]:
    """``repo[:tag]`` (or ``@digest``) split into (repository, tag); the tag defaults to ``latest``."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


def build_image(client: Any, context: Path, *, network_mode: str | None = None, nocache: bool = False,
                pull: bool = False, echo: Echo = _print) -> str:
    """Build ``context`` (written by build_contexts) and tag it; returns the image tag."""
    info = read_build_info(context)
    tag = info["image"]
    function = info.get("function")
    echo(f"==> building {function} as {tag} (base {info.get('base_image')})")
    step = "(before the first step)"
    tail: deque[str] = deque(maxlen=25)
    image_id = None
    stream = client.api.build(path=str(context), tag=tag, buildargs=info.get("build_args") or {}, rm=True,
                              forcerm=True, decode=True, network_mode=network_mode, nocache=nocache, pull=pull)
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "build failed"
            for line in str(message).splitlines():
                echo(line)
            raise BuildFailed(f"building {function} failed at {step}: {str(message).strip()[-500:]}",
                              function=function, details={"step": step, "output": list(tail)})
        text = chunk.get("stream")
        if text:
            for line in text.rstrip("\n").splitlines():
                echo(line)
                tail.append(line)
                if _STEP.match(line):
                    step = line.strip()
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = aux["ID"]
    if image_id is None:
        # podman's compatible API reports the id only in the stream; the tag is what matters, so check it exists.
        try:
            client.images.get(tag)
        except Exception as exc:
            raise BuildFailed(f"building {function} ended without an image {tag}: {exc}", function=function,
                              details={"step": step, "output": list(tail)}) from None
    echo(f"==> built {tag}")
    return tag


def registry_of(image: str) -> str:
    """The registry host of an image reference (``docker.io`` when the first part is not a host)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def is_insecure_registry(registry: str) -> bool:
    """Plain-HTTP registries: loopback ones (Docker's own default) and those in HYDRO_INSECURE_REGISTRIES."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host in ("localhost", "::1", "[::1]") or host.startswith("127."):
        return True
    listed = {r.strip() for r in os.environ.get("HYDRO_INSECURE_REGISTRIES", "").split(",") if r.strip()}
    return registry in listed


def _push_stream(client: Any, repo: str, tag: str, registry: str) -> Iterable[dict[str, Any]]:
    """The engine's push progress. For a plain-HTTP registry, ask for no TLS (``tlsVerify=false``):
    Docker already treats loopback registries as insecure and ignores the parameter, podman's
    Docker-compatible API needs it; the SDK's ``push`` cannot send it, hence the raw request."""
    if not is_insecure_registry(registry):
        return client.api.push(repo, tag=tag, stream=True, decode=True)
    from docker import auth

    api = client.api
    headers = {"X-Registry-Auth": auth.get_config_header(api, registry) or auth.encode_header({})}
    response = api._post(api._url("/images/{0}/push", repo), params={"tag": tag, "tlsVerify": "false"},
                         headers=headers, stream=True)
    api._raise_for_status(response)
    return api._stream_helper(response, decode=True)


def push_image(client: Any, image: str, *, echo: Echo = _print) -> None:
    """Push ``image`` to its registry (credentials from the docker config), printing each layer's status once."""
    repo, tag = image_reference(image)
    echo(f"==> pushing {image}")
    last: dict[str, str] = {}
    try:
        for chunk in _push_stream(client, repo, tag, registry_of(repo)):
            if "error" in chunk or "errorDetail" in chunk:
                message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
                raise PushFailed(f"pushing {image} failed: {message}", details={"image": image})
            status, layer = chunk.get("status"), chunk.get("id", "")
            if status and last.get(layer) != status:
                last[layer] = status
                echo(f"{layer}: {status}" if layer else status)
    except HydroError:
        raise
    except Exception as exc:  # APIError (unknown image, registry refused) or a dropped connection
        explanation = getattr(exc, "explanation", None) or str(exc)
        raise PushFailed(f"pushing {image} failed: {explanation}", details={"image": image}) from None
    echo(f"==> pushed {image}")


def build_images(contexts: dict[str, Path], *, network_mode: str | None = None, push: bool = False,
                 nocache: bool = False, echo: Echo = _print, client: Any = None) -> dict[str, str]:
    """Build (and push) every context in order; returns ``{function: image tag}``. Stops at the first failure."""
    client = client or connect()
    images: dict[str, str] = {}
    for name, context in contexts.items():
        images[name] = build_image(client, context, network_mode=network_mode, nocache=nocache, echo=echo)
        if push:
            push_image(client, images[name], echo=echo)
    return images


def push_images(images: Iterable[str], *, echo: Echo = _print, client: Any = None) -> None:
    """Push already built images (``hydro push``)."""
    client = client or connect()
    for image in images:
        push_image(client, image, echo=echo)
