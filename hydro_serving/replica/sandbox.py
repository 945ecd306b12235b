"""The local provider's sandbox: a replica runs as a user that cannot read the gateway's state.

Two modes, chosen by ``HYDRO_SANDBOX`` (gateway environment; default ``auto``):

* ``uid`` (``auto`` when the gateway runs as root): every function gets its own uid/gid from
  ``HYDRO_REPLICA_UIDS`` (default ``800000-865535``). File permissions then keep it out of the
  0700 state directory, other functions' files and ``/proc/<pid>/environ`` of other users.
* ``userns`` (``auto`` otherwise): an unprivileged user namespace (what bubblewrap does, without
  its exec), so the replica keeps the gateway's uid and is kept out by what it can *see*.
* ``off``: no sandbox (development on systems without namespaces; the gateway logs a warning).

In both sandboxed modes the replica enters a private mount namespace before it runs anything of
the function: directories it must not see (``/tmp``, the state directory, and, in ``uid`` mode,
every directory the uid could not traverse, such as ``/root`` where pyenv's interpreter lives)
are covered by a fresh tmpfs, and the paths it needs (the interpreter prefix, the venv, the
package, the templates, its handler folder, its own function folder) are bound back at the
same path, read-only except its function folder. Then it drops every privilege (``setgroups``,
``setgid``, ``setuid`` or a cleared capability set, and ``no_new_privs``).

:func:`enter` runs in the child after ``fork`` (in the zygote's child, or as the plain
process's ``preexec_fn``): a few syscalls, no new interpreter, so cold starts stay a fork away.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydro_serving.errors import ConfigError
from hydro_serving.replica import contract

UID = "uid"
USERNS = "userns"
OFF = "off"
DEFAULT_UIDS = (800000, 865535)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
KEPT_FLAGS = 2 | 4 | 8 | 1024 | 2048 | 4096  # statvfs's nosuid, nodev, noexec, noatime, nodiratime, relatime
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
O_PATH = getattr(os, "O_PATH", 0o10000000)


class SandboxError(OSError):
    """The sandbox could not be entered: the replica must not start unsandboxed."""


def sandbox_mode(environ: Mapping[str, str] | None = None) -> str:
    """``uid``, ``userns`` or ``off`` from ``HYDRO_SANDBOX`` (``auto``: uid as root, userns otherwise)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(contract.SANDBOX_ENV, "auto").strip().lower() or "auto"
    if raw == "auto":
        if not sys.platform.startswith("linux"):
            return OFF
        return UID if os.geteuid() == 0 else USERNS
    if raw in (UID, USERNS, OFF):
        if raw == UID and os.geteuid() != 0:
            raise ConfigError(f"{contract.SANDBOX_ENV}=uid needs a gateway running as root (use userns)",
                              field=contract.SANDBOX_ENV)
        return raw
    raise ConfigError(f"{contract.SANDBOX_ENV} must be auto, uid, userns or off, got {raw!r}",
                      field=contract.SANDBOX_ENV)


def uid_range(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``HYDRO_REPLICA_UIDS`` as ``(first, last)``, e.g. ``800000-865535``."""
    environ = os.environ if environ is None else environ
    raw = environ.get(contract.REPLICA_UIDS_ENV, "").strip()
    if not raw:
        return DEFAULT_UIDS
    first, sep, last = raw.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        lo, hi = 0, -1
    if not 1000 <= lo <= hi < 2**32 - 1:
        raise ConfigError(f"{contract.REPLICA_UIDS_ENV} must be FIRST-LAST with 1000 <= FIRST <= LAST, got {raw!r}",
                          field=contract.REPLICA_UIDS_ENV)
    return lo, hi


@dataclass(frozen=True)
class Plan:
    """What :func:`enter` does in the child; computed by the gateway, sent to a zygote as JSON."""

    mode: str
    uid: int = -1
    gid: int = -1
    cover: tuple[str, ...] = ()
    binds: tuple[tuple[str, bool], ...] = field(default=())  # (path, writable)
    files: tuple[tuple[str, str], ...] = field(default=())  # (source, target): a file shown read-only elsewhere

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "uid": self.uid, "gid": self.gid, "cover": list(self.cover),
                "binds": [[p, w] for p, w in self.binds], "files": [[s, t] for s, t in self.files]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(str(data["mode"]), int(data["uid"]), int(data["gid"]), tuple(data["cover"]),
                   tuple((str(p), bool(w)) for p, w in data["binds"]),
                   tuple((str(s), str(t)) for s, t in data.get("files", ())))


def runtime_paths(python: str | None = None, extra: Iterable[str | Path] = ()) -> list[str]:
    """What any replica reads: the interpreter prefixes, the import path (site-packages, an editable
    install), the venv of ``python`` and ``extra`` (the template folders)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    if python:
        venv = Path(python).parent.parent
        paths.add(str(venv))
        paths.add(str(Path(os.path.realpath(python)).parent.parent))
    paths.update(str(p) for p in extra)
    return sorted(p for p in paths if os.path.exists(p))


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts
    return [str(Path(*parts[:i])) for i in range(2, len(parts) + 1)]


def _traversable(path: str, uid: int, gid: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def identity_files(folder: Path, uid: int, gid: int, name: str, home: str) -> list[tuple[str, str]]:
    """``/etc/passwd`` and ``/etc/group`` as the replica sees them: the host's, plus its own uid and gid.

    A per-function uid has no entry on the host, so ``getpwuid`` fails inside the replica: Java then
    takes ``?`` for ``user.home`` (Spark's launcher refuses to start), ``getpass.getuser()`` raises.
    Like a container image's passwd, these name the replica's user, with its scratch folder as home.
    """
    user = f"hydro-{name}"[:32]
    out = []
    for target, line in (("/etc/passwd", f"{user}:x:{uid}:{gid}:Hydro function {name}:{home}:/usr/sbin/nologin\n"),
                         ("/etc/group", f"{user}:x:{gid}:\n")):
        try:
            host = Path(target).read_text()
        except OSError:
            host = ""
        source = folder / Path(target).name
        source.write_text(host if host.endswith("\n") or not host else host + "\n")
        with source.open("a") as fh:
            fh.write(line)
        os.chown(source, 0, gid)  # the function's group reads it; nobody else's
        source.chmod(0o640)
        out.append((str(source), target))
    return out


def make_plan(mode: str, *, uid: int = -1, gid: int = -1, hidden: Iterable[str] = (),
              readable: Iterable[str] = (), writable: Iterable[str] = (),
              files: Iterable[tuple[str, str]] = ()) -> Plan:
    """The plan for one replica: ``hidden`` folders are always covered (the state directory, /tmp);
    in ``uid`` mode so is the topmost folder on the way to a needed path that ``uid`` cannot traverse."""
    if mode == OFF:
        return Plan(OFF)
    binds: list[tuple[str, bool]] = []
    for paths, rw in ((readable, False), (writable, True)):
        for p in paths:
            if rw or os.path.exists(p):  # at the path the replica is told, and where a link there leads
                binds += [(os.path.abspath(p), rw), (os.path.realpath(p), rw)]
    cover = {os.path.realpath(h) for h in hidden if os.path.isdir(h)}
    if mode == UID:
        for path, _ in binds:
            for ancestor in _ancestors(path)[:-1]:
                if not _traversable(ancestor, uid, gid):
                    cover.add(ancestor)
                    break
    tops = sorted(c for c in cover if not any(o != c and _inside(c, o) for o in cover))
    # bind back only what a cover hides; a path inside another bound path comes with it
    kept = sorted({(p, w) for p, w in binds if any(_inside(p, c) for c in tops)}, key=lambda b: (len(b[0]), b[0], b[1]))
    final: list[tuple[str, bool]] = []
    for path, writable_ in kept:
        if not any(_inside(path, other) and (w or not writable_) for other, w in final):
            final.append((path, writable_))
    return Plan(mode, uid, gid, tuple(tops), tuple(final), tuple(files))


# ---- in the child ------------------------------------------------------------------------------


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(err, f"sandbox: {what}: {os.strerror(err)}")


def _mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _drop_capabilities(libc: Any) -> None:
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")


def enter(plan: Plan) -> None:
    """Enter the sandbox described by ``plan`` (in the child, after fork, before any function code)."""
    if plan.mode == OFF:
        return
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    if plan.mode == USERNS:
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(user, mount) (this system may forbid "
               f"unprivileged user namespaces: allow them, run the gateway as root, or {contract.SANDBOX_ENV}=off)")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    else:
        _check(libc.unshare(CLONE_NEWNS), "unshare(mount)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None)
    sources = {path: os.open(path, O_PATH | os.O_CLOEXEC) for path, _ in plan.binds if os.path.exists(path)}
    shown = {src: os.open(src, O_PATH | os.O_CLOEXEC) for src, _ in plan.files if os.path.isfile(src)}
    try:
        for folder in plan.cover:
            mode = "1777" if folder == "/tmp" else "0755"
            _mount(libc, "tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size=256m")
        for path, writable in plan.binds:
            fd = sources.get(path)
            if fd is None:
                continue
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if not os.path.exists(path):
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            _mount(libc, f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
            if not writable:  # keep the flags the source had (a user namespace may not drop locked ones)
                kept = os.statvfs(path).f_flag & KEPT_FLAGS
                _mount(libc, None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | kept, None)
        for src, target in plan.files:
            fd = shown.get(src)
            if fd is None or not os.path.isfile(target):
                continue
            _mount(libc, f"/proc/self/fd/{fd}", target, None, MS_BIND, None)
            kept = os.statvfs(target).f_flag & KEPT_FLAGS
            _mount(libc, None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | kept, None)
    finally:
        for fd in (*sources.values(), *shown.values()):
            os.close(fd)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if plan.mode == UID:
        os.setgroups([])
        os.setresgid(plan.gid, plan.gid, plan.gid)
        os.setresuid(plan.uid, plan.uid, plan.uid)
        # the kernel made the process undumpable at setuid (its /proc files then belong to root, which
        # breaks /proc/self/fd readers); an exec would reset it, so do what an exec would
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    else:
        # same uid as the gateway and the other replicas: no /proc/<pid>/{environ,mem} of this one for them,
        # and no capability left in its namespace
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        _drop_capabilities(libc)
