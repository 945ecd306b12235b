"""Admin credentials: generated on the first start, kept 0600 in the state directory.

One file, ``credentials.json``, holds a bearer token and a basic-auth password for user ``admin``;
the CLI reads the same file (or ``HYDRO_TOKEN``) so a local user never copies secrets around.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from hydro_serving.errors import ConfigError, Unauthorized

CREDENTIALS_FILE = "credentials.json"
ADMIN_USER = "admin"


@dataclass(frozen=True)
class Credentials:
    token: str
    user: str
    password: str

    def matches(self, authorization: str | None) -> bool:
        """True when the header carries these admin credentials (the gateway never forwards them)."""
        try:
            self.check(authorization)
        except Unauthorized:
            return False
        return True

    def check(self, authorization: str | None) -> None:
        """Raise :class:`Unauthorized` unless the header carries the token or the admin password.

        Comparisons are constant-time so the check leaks nothing about the secret by timing.
        """
        if not authorization:
            raise Unauthorized("credentials required: send 'Authorization: Bearer <token>' or basic auth")
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and hmac.compare_digest(value.encode(), self.token.encode()):
            return
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("malformed basic auth header") from None
            user_ok = hmac.compare_digest(user.encode(), self.user.encode())
            if hmac.compare_digest(password.encode(), self.password.encode()) and user_ok:
                return
        raise Unauthorized("invalid credentials")


def load_or_create(state_dir: Path) -> Credentials:
    """Read the credentials file, creating it (mode 0600, exclusive create) on first start."""
    path = state_dir / CREDENTIALS_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        data = {"token": secrets.token_urlsafe(32), "user": ADMIN_USER, "password": secrets.token_urlsafe(18)}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another gateway won the race: read its file
            return read_credentials(state_dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        return Credentials(data["token"], data["user"], data["password"])
    os.chmod(path, 0o600)
    return read_credentials(state_dir)


def read_credentials(state_dir: Path) -> Credentials:
    """The stored credentials; a clear ConfigError when there are none (no gateway started there)."""
    path = state_dir / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text())
        return Credentials(str(data["token"]), str(data.get("user", ADMIN_USER)), str(data["password"]))
    except FileNotFoundError:
        raise ConfigError(f"no gateway credentials at {path}; set HYDRO_TOKEN or point --state/HYDRO_STATE at "
                          "the gateway's state directory") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read gateway credentials at {path}: {exc}") from None


def client_token(state_dir: Path | None = None) -> str | None:
    """What the CLI sends: ``HYDRO_TOKEN``, else the token in the state directory, else None."""
    if os.environ.get("HYDRO_TOKEN"):
        return os.environ["HYDRO_TOKEN"]
    from hydro_serving.gateway.config import default_state_dir

    try:
        return read_credentials(state_dir or default_state_dir()).token
    except ConfigError:
        return None
