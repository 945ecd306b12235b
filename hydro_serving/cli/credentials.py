"""Which token the CLI may send where: every credential belongs to one gateway URL.

A token is only ever attached to the gateway it belongs to, so a stack file from someone else's
repository (``provider.gateway: https://evil.example``) cannot collect it. Sources, first match:

* ``HYDRO_TOKEN``: belongs to ``HYDRO_GATEWAY`` when that is set, else to the gateway the user
  named on the command line (``--gateway``) or the default one; never to a URL a stack file names.
* ``hydro login URL``: tokens kept per URL in ``<config>/logins.json`` (0600 in a 0700 folder).
* the state directory's ``credentials.json``: belongs to the URL its gateway recorded at start.

URLs are compared normalised (scheme and host lower-case, explicit port, no trailing slash,
``localhost`` read as ``127.0.0.1``, where a local gateway listens and records itself).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hydro_serving.errors import ConfigError
from hydro_serving.gateway.auth import read_credentials, recorded_url
from hydro_serving.gateway.config import DEFAULT_GATEWAY_URL, default_state_dir
from hydro_serving.stack import Stack

LOGINS_FILE = "logins.json"
STACK_SOURCE = "provider.gateway"


def normalize(url: str) -> str:
    """``http://Host:80/`` and ``http://host`` are one gateway; anything unparsable stays as given."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower()
    if host == "localhost":  # `hydro up` with a localhost URL starts a gateway that records 127.0.0.1
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class Target:
    """The gateway a command talks to, and where that URL came from (credentials depend on it)."""

    url: str
    source: str  # "--gateway", "provider.gateway", "HYDRO_GATEWAY" or "default"
    stack_path: Path | None = None

    def describe(self) -> str:
        if self.source == STACK_SOURCE and self.stack_path is not None:
            return f"{self.url} (provider.gateway in {self.stack_path})"
        return self.url


def resolve_target(flag: str | None, stack: Stack | None = None) -> Target:
    """``--gateway``, then the stack's ``provider.gateway``, then ``HYDRO_GATEWAY``, then the default."""
    if flag:
        return Target(flag.rstrip("/"), "--gateway")
    if stack is not None and stack.provider.gateway:
        return Target(stack.provider.gateway.rstrip("/"), STACK_SOURCE, stack.path)
    if os.environ.get("HYDRO_GATEWAY"):
        return Target(os.environ["HYDRO_GATEWAY"].rstrip("/"), "HYDRO_GATEWAY")
    return Target(DEFAULT_GATEWAY_URL, "default")


# ---- logins ------------------------------------------------------------------------------------------


def config_dir() -> Path:
    """``$HYDRO_HOME/config``, else the user's config directory (``$XDG_CONFIG_HOME/hydro``)."""
    if os.environ.get("HYDRO_HOME"):
        return Path(os.environ["HYDRO_HOME"]).expanduser() / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir("hydro"))


def logins() -> dict[str, str]:
    """Normalised URL -> token, from ``hydro login``; a damaged file is an error, never ignored."""
    path = config_dir() / LOGINS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; remove it and log in again") from None
    gateways = data.get("gateways") if isinstance(data, dict) else None
    if not isinstance(gateways, dict):
        raise ConfigError(f"{path} is not a hydro logins file; remove it and log in again")
    return {str(url): str(entry["token"]) for url, entry in gateways.items()
            if isinstance(entry, dict) and isinstance(entry.get("token"), str)}


def _write_logins(entries: dict[str, str]) -> Path:
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = folder / LOGINS_FILE
    tmp = folder / f".{LOGINS_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"gateways": {url: {"token": token} for url, token in sorted(entries.items())}}, fh, indent=2)
    os.replace(tmp, path)
    return path


def save_login(url: str, token: str) -> Path:
    return _write_logins({**logins(), normalize(url): token})


def remove_login(url: str) -> bool:
    entries = logins()
    if entries.pop(normalize(url), None) is None:
        return False
    _write_logins(entries)
    return True


# ---- which token for which gateway -------------------------------------------------------------------


def _env_token_gateway(target: Target) -> str:
    """The gateway ``HYDRO_TOKEN`` belongs to: ``HYDRO_GATEWAY``, else the one named on the command line."""
    if os.environ.get("HYDRO_GATEWAY"):
        return os.environ["HYDRO_GATEWAY"]
    return target.url if target.source == "--gateway" else DEFAULT_GATEWAY_URL


def token_for(target: Target, state_dir: Path | None = None) -> str | None:
    """The admin token that belongs to ``target``, or None: never one that belongs elsewhere."""
    want = normalize(target.url)
    if os.environ.get("HYDRO_TOKEN") and normalize(_env_token_gateway(target)) == want:
        return os.environ["HYDRO_TOKEN"]
    logged_in = logins().get(want)
    if logged_in:
        return logged_in
    state = (state_dir or default_state_dir()).expanduser()
    url = recorded_url(state)
    if url is not None and normalize(url) == want:
        try:
            return read_credentials(state).token
        except ConfigError:
            return None
    return None


def require_token(target: Target, state_dir: Path | None = None) -> str:
    """The token for ``target``, or a ConfigError that says why there is none and how to get one."""
    token = token_for(target, state_dir)
    if token is not None:
        return token
    state = (state_dir or default_state_dir()).expanduser()
    local = recorded_url(state)
    known = f"; the local credentials ({state}) belong to {local}" if local else ""
    if target.source == STACK_SOURCE:
        raise ConfigError(f"the CLI has no credentials for the gateway {target.describe()}{known}. If you trust "
                          f"that gateway, log in to it with 'hydro login {target.url}'; otherwise pass --gateway")
    raise ConfigError(f"the CLI has no credentials for the gateway {target.url}{known}; log in with "
                      f"'hydro login {target.url}', or set HYDRO_TOKEN (with HYDRO_GATEWAY), or point --state at the "
                      "gateway's state directory")
