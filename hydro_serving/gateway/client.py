"""A small synchronous client of the gateway API, shared by ``hydro`` commands (deploy, up, demo).

It speaks plain HTTP with the standard library (proxies ignored: the gateway is usually local)
and turns error bodies back into :class:`HydroError` so the CLI prints the gateway's own message.
Its token goes on admin calls only; an invocation carries a credential only when the caller
passes one (``authorization=``). Which token belongs to which gateway is decided before a client
is built (:mod:`hydro_serving.cli.credentials`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from hydro_serving.errors import ConfigError, HydroError
from hydro_serving.gateway.config import DEFAULT_PORT, default_state_dir
from hydro_serving.stack import FunctionSpec, Stack

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def ok(self) -> bool:
        return self.status < 400


def check_local_model(spec: FunctionSpec) -> None:
    """A local model file (``model: ./model.joblib``) against the function's signature, on the deploying machine.

    The model is the deployer's own file, read here rather than by the gateway (a pickle is code);
    store models were checked at upload and are checked by the gateway against their manifest.
    """
    if spec.signature is None or not spec.model or not spec.model_is_local:
        return
    from hydro_serving.store.declared import check_signature, declared_inputs
    from hydro_serving.store.frameworks import detect_framework

    path = Path(spec.model.removeprefix("file://")).expanduser()
    if not path.exists():
        return  # the gateway names the missing path
    try:
        check_signature(spec.signature, declared_inputs(path, detect_framework(path)),
                        field=f"functions.{spec.name}.signature")
    except HydroError as exc:
        exc.function = spec.name
        exc.message = f"function '{spec.name}': {exc.message}"
        raise


def stack_field(exc: HydroError) -> str | None:
    """The gateway's ``hydro.lang`` of function ``f1`` as the stack.yml key ``functions.f1.lang``."""
    if exc.field and exc.function and exc.field.startswith("hydro."):
        return f"functions.{exc.function}.{exc.field.removeprefix('hydro.')}"
    return exc.field


class DeployIncomplete(HydroError):
    """A stack deploy that failed after applying some functions: says exactly what changed and what did not."""

    def __init__(self, cause: HydroError, failed: str, done: list[tuple[str, str]], pending: list[str]) -> None:
        applied = ", ".join(f"{name} ({action})" for name, action in done) or "none"
        untouched = ", ".join([failed, *pending])
        super().__init__(f"deploying '{failed}' failed: {cause.message}. Applied before it: {applied}. "
                         f"Not applied (left as they were): {untouched}", status=cause.status, field=stack_field(cause),
                         function=failed, details={"applied": dict(done), "not_applied": [failed, *pending]})
        self.cause = cause
        self.done = done
        self.pending = [failed, *pending]


def error_from(response: Response, url: str) -> HydroError:
    """Rebuild the gateway's error (message, field, function) from its JSON body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return HydroError(str(body["error"]), status=response.status, field=body.get("field"),
                          stage=body.get("stage"), function=body.get("function"))
    text = response.body.decode(errors="replace")[:300]
    return HydroError(f"{url} answered {response.status}: {text}", status=response.status)


def start_hint(url: str) -> str:
    """How to start a gateway where ``url`` points: ``hydro gateway`` listens on 8080 unless told the port."""
    parsed = urlparse(url)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        port = DEFAULT_PORT
    if parsed.hostname not in LOCAL_HOSTS:
        return f"start the gateway on {parsed.hostname}, or point --gateway / HYDRO_GATEWAY at one that runs"
    flag = "" if port == DEFAULT_PORT else f" --port {port}"
    return f"start one with 'hydro gateway{flag}' or 'hydro up'"


class GatewayClient:
    """Calls of the gateway API; admin calls send ``Authorization: Bearer <token>``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # ---- transport ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float | None = None, admin: bool = False) -> Response:
        all_headers = dict(headers or {})
        if admin and self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=all_headers)
        try:
            with _OPENER.open(req, timeout=timeout or self.timeout) as resp:
                return Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers.items()), exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"no gateway answers at {self.url} ({reason}); {start_hint(self.url)}") from None

    def _admin(self, method: str, path: str, data: Any = None, ok_404: bool = False) -> Response:
        body = json.dumps(data).encode() if data is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        response = self.request(method, path, body, headers, admin=True)
        if response.status == 401:
            hint = "" if self.token else f" (no token: log in with 'hydro login {self.url}')"
            raise HydroError(f"the gateway at {self.url} refused the credentials{hint}", status=401)
        if not response.ok and not (ok_404 and response.status == 404):
            raise error_from(response, self.url + path)
        return response

    # ---- API ----------------------------------------------------------------------------------------

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            return self.request("GET", "/healthz", timeout=timeout).status == 200
        except ConfigError:
            return False

    def info(self) -> dict[str, Any]:
        return self._admin("GET", "/system/info").json()

    def list_functions(self) -> list[dict[str, Any]]:
        return self._admin("GET", "/system/functions").json()

    def describe(self, name: str) -> dict[str, Any]:
        return self._admin("GET", f"/system/function/{quote(name)}").json()

    def deploy_spec(self, spec: FunctionSpec, extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """PUT, then POST on 404: ``("updated"|"unchanged"|"created", status)``."""
        deployment = self._deployment(spec, extra)
        response = self._admin("PUT", "/system/functions", deployment, ok_404=True)
        if response.status == 404:
            return "created", self._admin("POST", "/system/functions", deployment).json()
        status = response.json()
        return ("updated" if status.get("changed", True) else "unchanged"), status

    def validate_specs(self, specs: list[FunctionSpec]) -> None:
        """Every deploy check on the whole batch, nothing applied (``POST /system/validate``).

        A gateway that predates the endpoint (404/405) is not asked: the deploy then checks each function.
        """
        for spec in specs:
            check_local_model(spec)
        body = {"functions": [self._deployment(spec) for spec in specs]}
        response = self.request("POST", "/system/validate", json.dumps(body).encode(),
                                {"Content-Type": "application/json"}, admin=True)
        if response.status in (404, 405):  # no such route on this gateway
            return
        if response.status == 401:
            raise HydroError(f"the gateway at {self.url} refused the credentials", status=401)
        if not response.ok:
            exc = error_from(response, self.url + "/system/validate")
            exc.field = stack_field(exc)
            raise exc

    @staticmethod
    def _deployment(spec: FunctionSpec, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        deployment = {**(extra or {}), "service": spec.name, "hydro": spec.to_dict()}
        if spec.image:
            deployment.setdefault("image", spec.image)
        return deployment

    def deploy_stack(self, stack: Stack, names: list[str] | tuple[str, ...] | None = None,
                     on_result: Callable[[str, str], None] | None = None) -> list[tuple[str, str]]:
        """Validate the selected functions as a whole, then deploy them (plain functions before routers).

        Nothing is applied when the validation fails. When a deploy fails midway,
        :class:`DeployIncomplete` says which functions were applied (and how) and which were not.
        ``on_result(name, action)`` is called as each one is applied.
        """
        return [(name, action) for name, action, _ in self.deploy_stack_status(stack, names, on_result)]

    def deploy_stack_status(self, stack: Stack, names: list[str] | tuple[str, ...] | None = None,
                            on_result: Callable[[str, str], None] | None = None
                            ) -> list[tuple[str, str, dict[str, Any]]]:
        """As :meth:`deploy_stack`, with each function's status (``modelPin``: what its model resolved to)."""
        specs = [spec.resolved(stack.root) for spec in stack.select(names)]
        specs.sort(key=lambda s: s.is_router)  # stable: file order within each group
        self.validate_specs(specs)
        done: list[tuple[str, str, dict[str, Any]]] = []
        for i, spec in enumerate(specs):
            try:
                action, status = self.deploy_spec(spec)
            except HydroError as exc:
                raise DeployIncomplete(exc, spec.name, [(name, act) for name, act, _ in done],
                                       [s.name for s in specs[i + 1:]]) from None
            done.append((spec.name, action, status))
            if on_result is not None:
                on_result(spec.name, action)
        return done

    def remove(self, name: str, force: bool = False) -> list[str]:
        """Remove a function; returns the pipelines that used it (only with ``force``: else the gateway says 409)."""
        body: dict[str, Any] = {"functionName": name}
        if force:
            body["force"] = True
        response = self._admin("DELETE", "/system/functions", body)
        try:
            pipelines = response.json().get("pipelines", [])
        except (ValueError, AttributeError):
            return []
        return [str(p) for p in pipelines] if isinstance(pipelines, list) else []

    def scale(self, name: str, replicas: int) -> dict[str, Any]:
        return self._admin("POST", f"/system/scale-function/{quote(name)}", {"replicas": replicas}).json()

    def invoke(self, name: str, data: bytes = b"", path: str = "", method: str = "POST",
               headers: dict[str, str] | None = None, timeout: float | None = None,
               authorization: str | None = None) -> Response:
        """Invoke a function; the response is returned whatever its status (the caller decides).

        No credential goes along unless ``authorization`` is given (``Bearer <key>``, or the admin
        token for ``hydro invoke --auth``): the gateway never forwards either to the function. An
        ``Authorization`` header the caller passes in ``headers`` wins (it may be meant for the function).
        """
        suffix = "/" + path.lstrip("/") if path else ""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if authorization and not any(key.lower() == "authorization" for key in all_headers):
            all_headers["Authorization"] = authorization
        return self.request(method, f"/function/{quote(name)}{suffix}", data if method != "GET" else None,
                            all_headers, timeout=timeout)

    def keys(self) -> list[dict[str, Any]]:
        return self._admin("GET", "/system/keys").json()

    def create_key(self, name: str, functions: list[str], expires: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "functions": functions}
        if expires is not None:
            body["expires"] = expires
        return self._admin("POST", "/system/keys", body).json()

    def revoke_key(self, name: str) -> dict[str, Any]:
        return self._admin("DELETE", f"/system/keys/{quote(name, safe='')}").json()

    def logs(self, name: str, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        query = {"name": name, **({"tail": str(tail)} if tail is not None else {}),
                 **({"follow": "true"} if follow else {})}
        req = urllib.request.Request(f"{self.url}/system/logs?{urlencode(query)}", method="GET",
                                     headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        try:
            resp = _OPENER.open(req, timeout=None if follow else self.timeout)
        except urllib.error.HTTPError as exc:
            raise error_from(Response(exc.code, dict(exc.headers.items()), exc.read()), req.full_url) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(f"no gateway answers at {self.url} ({getattr(exc, 'reason', exc)}); "
                              f"{start_hint(self.url)}") from None
        with resp:
            for raw in resp:
                try:
                    yield str(json.loads(raw)["text"])
                except (ValueError, KeyError, TypeError):
                    yield raw.decode(errors="replace").rstrip("\n")


def ensure_local_gateway(url: str, state_dir: Path | None = None, timeout: float = 30.0) -> tuple[str, bool]:
    """``(url, started)``: start a detached local gateway when none answers at ``url`` (loopback only).

    The gateway shares the CLI's state directory, so its credentials are where the CLI looks; its
    output goes to ``<state>/gateway.log``.
    """
    client = GatewayClient(url)
    if client.healthy():
        return url, False
    parsed = urlparse(url)
    if parsed.hostname not in LOCAL_HOSTS:
        raise ConfigError(f"no gateway answers at {url}, and it is not local, so none is started")
    state = state_dir or default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    port = parsed.port or 80
    argv = [sys.executable, "-m", "hydro_serving.cli.main", "gateway", "--host", "127.0.0.1", "--port", str(port),
            "--state", str(state)]
    log_path = state / "gateway.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise ConfigError(f"the local gateway exited at start (status {proc.returncode}): "
                              + (" | ".join(tail) or "no output") + f"; see {log_path}")
        if client.healthy(timeout=1.0):
            (state / "gateway.pid").write_text(str(proc.pid))
            return url, True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    proc.terminate()
    raise ConfigError(f"the local gateway did not answer within {timeout:g}s; see {log_path}")
