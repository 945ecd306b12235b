"""Process helpers for replicas and zygotes (Linux ``prctl``), written once.

Used by the local provider (a plain replica process), the zygote and the replicas it forks, and
the runtime's gunicorn workers: each dies with its parent, so a killed gateway leaves no orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4


def _prctl(*args: int | bytes) -> int:
    return int(ctypes.CDLL("libc.so.6", use_errno=True).prctl(*args))


def die_with_parent(parent: int | None = None) -> None:
    """SIGKILL this process when its parent goes (Linux only; a no-op elsewhere).

    With ``parent`` (the pid it expects as parent), exit now if that parent is already gone:
    the signal would never come. Safe in a ``preexec_fn`` (no allocation beyond ctypes' call).
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def set_process_name(name: str) -> None:
    """The name ``ps -o comm`` and ``/proc/<pid>/comm`` show (15 bytes): a forked child keeps its
    zygote's command line, so this is what tells a zygote from the replicas it forked."""
    with contextlib.suppress(Exception):
        _prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def make_undumpable() -> None:
    """No core dumps and no ``/proc/<pid>/{environ,mem,maps}`` for processes of the same user that
    lack ``CAP_SYS_PTRACE`` (e.g. replicas in a user namespace): the gateway calls it at start."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
