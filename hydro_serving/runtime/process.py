"""Process helpers of a replica (Linux ``prctl``): die with the parent, name the process.

Their own module because both the server (a gunicorn worker dies with its arbiter) and the
zygote (a forked replica dies with the zygote) need them, and the zygote starts the server:
kept in the zygote, they made ``server -> zygote -> __main__ -> server`` a cycle.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent goes (Linux); exit now if the parent is already gone."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl: the signal will never come
        os._exit(1)


def set_process_name(name: str) -> None:
    """The name ``ps -o comm`` and ``/proc/<pid>/comm`` show (15 bytes): a forked child keeps the
    zygote's command line, so this is what tells a zygote from the replicas it forked."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
