"""Function secrets for gateways that run replicas on this machine (OpenFaaS semantics).

A function lists ``secrets: [name, ...]``; each is a file the function can read, never an
environment variable (env leaks into logs, crash dumps and child processes). The gateway keeps
them in ``<state>/secrets/<name>`` (mode 0600, written by ``hydro secret create``), and a replica
gets ``HYDRO_SECRETS_DIR``: a per-function directory holding copies of only the secrets it
declared, so one function cannot read another's. On Knative the same names are mounted at
``/var/openfaas/secrets``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from hydro_serving.errors import ValidationError

SECRETS_DIR = "secrets"
ENV_VAR = "HYDRO_SECRETS_DIR"
# a Kubernetes Secret name (DNS subdomain), so a stack deploys unchanged on Knative; never a path
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def store_dir(state_dir: Path) -> Path:
    return state_dir / SECRETS_DIR


def check_name(name: str, field: str = "name") -> None:
    """Refuse names that are not Kubernetes Secret names (and so could never be a path like ``../x``)."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise ValidationError(f"'{name}' is not a valid secret name: lower-case letters, digits, '-' and '.', "
                              "starting and ending with a letter or digit", field=field)


def check_declared(state_dir: Path, secrets: tuple[str, ...] | list[str], function: str) -> None:
    """Every declared secret must exist before the function is deployed (400 naming ``hydro.secrets[i]``)."""
    for i, name in enumerate(secrets):
        field = f"hydro.secrets[{i}]"
        check_name(name, field)
        if not (store_dir(state_dir) / name).is_file():
            raise ValidationError(f"secret '{name}' does not exist on the gateway; create it with "
                                  f"'hydro secret create {name} --from-file PATH' (it is read from "
                                  f"{store_dir(state_dir) / name})", field=field, function=function)


def _write_private(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` with mode 0600 atomically (a reader never sees half a secret),
    owned by ``owner`` (uid, gid) when given: the sandboxed replica's user, who alone may read it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):  # left by a crash: never written through
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_secret(state_dir: Path, name: str, data: bytes) -> Path:
    """Create or replace one secret in the gateway's store (``hydro secret create``)."""
    check_name(name)
    folder = store_dir(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / name
    _write_private(path, data)
    return path


def materialize(state_dir: Path, secrets: tuple[str, ...] | list[str], target: Path,
                owner: tuple[int, int] | None = None) -> Path:
    """Make ``target`` hold 0600 copies of exactly ``secrets`` (current contents: a rotated secret
    reaches replicas started after the rotation, as a re-created pod sees an updated Secret).

    With ``owner`` (a sandboxed replica's uid and gid) the files belong to that user; the folder
    stays the gateway's (0750, group: the function's), so a replica can read its secrets but never
    plant a link the gateway would write through.
    """
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is not None:
        os.chown(target, -1, owner[1], follow_symlinks=False)
    os.chmod(target, 0o750 if owner is not None else 0o700)
    wanted = set(secrets)
    for name in secrets:
        check_name(name)
        source = store_dir(state_dir) / name
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            raise ValidationError(f"secret '{name}' no longer exists on the gateway ({source})",
                                  field="secrets") from None
        _write_private(target / name, data, owner)
    for stale in target.iterdir():
        if stale.name not in wanted:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    return target


def remove_materialized(target: Path) -> None:
    if target.is_dir():
        for path in target.iterdir():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            target.rmdir()
