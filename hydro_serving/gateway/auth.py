"""Admin credentials and the one parser of ``Authorization`` headers.

One file, ``credentials.json`` (0600 in the state directory), holds a bearer token and a basic-auth
password for user ``admin``, and the URL the gateway serves on: the CLI reads the same file and
sends the token to that gateway only (:mod:`hydro_serving.cli.credentials`).

Headers are untrusted input: :func:`presented` refuses duplicates, non-ASCII and oversized values
with a 400 before any secret is compared, so no header shape can reach a 500 or smuggle a second
credential past the check.
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

from hydro_serving.errors import BadRequest, ConfigError, Unauthorized

CREDENTIALS_FILE = "credentials.json"
ADMIN_USER = "admin"
MAX_AUTHORIZATION = 4096  # characters; a bearer token or key is < 100


@dataclass(frozen=True)
class Presented:
    """A well-formed ``Authorization`` header: ``scheme`` is ``bearer`` or ``basic`` (lower case)."""

    scheme: str
    value: str


def presented(values: list[str]) -> Presented | None:
    """The request's one ``Authorization`` header, checked for shape; None when there is none.

    400 (naming ``Authorization``) for several headers, non-ASCII, control characters or more than
    :data:`MAX_AUTHORIZATION` characters; 401 for another scheme than Bearer or Basic.
    """
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"send one Authorization header, not {len(values)}", field="Authorization")
    raw = values[0]
    if len(raw) > MAX_AUTHORIZATION:
        raise BadRequest(f"the Authorization header is longer than {MAX_AUTHORIZATION} characters",
                         field="Authorization")
    if not raw.isascii() or not raw.isprintable():
        raise BadRequest("the Authorization header must be printable ASCII", field="Authorization")
    scheme, _, value = raw.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        raise Unauthorized(f"unsupported authorization scheme '{scheme[:20]}': send 'Bearer <token or key>' or "
                           "basic auth")
    value = value.strip()
    if not value:
        raise Unauthorized(f"the {scheme} credentials are empty")
    return Presented(scheme, value)


@dataclass(frozen=True)
class Credentials:
    token: str
    user: str
    password: str

    def matches(self, credential: Presented | None) -> bool:
        """True when the header carries these admin credentials (the gateway never forwards them).

        Comparisons are constant-time so the check leaks nothing about the secret by timing.
        """
        if credential is None:
            return False
        if credential.scheme == "bearer":
            return hmac.compare_digest(credential.value.encode(), self.token.encode())
        try:
            user, _, password = base64.b64decode(credential.value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False  # not base64 of UTF-8: not ours (it may be meant for the function)
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        return hmac.compare_digest(password.encode(), self.password.encode()) and user_ok

    def check(self, values: list[str]) -> None:
        """Raise unless the request's Authorization header carries the token or the admin password."""
        credential = presented(values)
        if credential is None:
            raise Unauthorized("credentials required: send 'Authorization: Bearer <token>' or basic auth")
        if not self.matches(credential):
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


def record_url(state_dir: Path, url: str) -> None:
    """Write the URL this gateway serves on into its credentials file (the CLI sends the token only there)."""
    path = state_dir / CREDENTIALS_FILE
    data = json.loads(path.read_text())
    if data.get("url") == url:
        return
    data["url"] = url
    tmp = path.with_name(f".{CREDENTIALS_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def recorded_url(state_dir: Path) -> str | None:
    """The URL the gateway of ``state_dir`` wrote at its last start (None: none started there)."""
    try:
        url = json.loads((state_dir / CREDENTIALS_FILE).read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) else None
