"""Reading a function's log file: the last lines, then (optionally) following it as it grows.

Both the local and the Docker provider append every replica's output to ``<state>/logs/<fn>.log``
(so logs outlive replicas scaled to zero); this is the one reader ``hydro logs`` goes through.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

LOG_TAIL_BYTES = 64 * 1024
FOLLOW_POLL_SECONDS = 0.2
LOG_MODE = 0o600  # a function's log is the gateway's: no other user (no other function) reads it


def open_private_log(path: Path) -> BinaryIO:
    """Open a function's log for appending, created 0600 (and made 0600 if an older gateway left it 0644)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, LOG_MODE)
    os.fchmod(fd, LOG_MODE)
    return os.fdopen(fd, "ab")


async def read_log_lines(path: Path, tail: int | None = None, follow: bool = False) -> AsyncIterator[str]:
    """The file's lines (the last ``tail`` ones); with ``follow``, keep yielding whole new lines."""
    position = 0
    if path.exists():
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = 0 if tail is None else max(0, size - max(LOG_TAIL_BYTES, tail * 512))
            fh.seek(start)
            data = fh.read()
            position = fh.tell()
        lines = data.decode(errors="replace").splitlines()
        if start > 0 and lines:
            lines = lines[1:]  # the first line may be cut
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        for line in lines:
            yield line
    pending = b""
    while follow:  # ends when the client goes away (the handler is cancelled) or the gateway stops
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) < position:
                position, pending = 0, b""  # truncated or recreated
            fh.seek(position)
            data = pending + fh.read()
            position = fh.tell()
        *complete, pending = data.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace")
