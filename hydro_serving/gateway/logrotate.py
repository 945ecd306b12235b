"""Size-bounded logs: the gateway's own log and the replica (and zygote) logs under ``<state>`` rotate by size.

Why copy-and-truncate rather than renaming: these files are written through descriptors other
processes hold (the gateway's stderr opened by whoever started it, each replica's stdout opened by the
provider, in append mode), so a renamed file would keep growing under its new name. Copying the file to
``<name>.1`` (older copies shifted to ``.2`` ... ``.<backups>``, the oldest dropped) and truncating it in
place works with any append-mode writer; the lines written between the copy and the truncation (a
few milliseconds) are lost, which is the price of not coordinating with the writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("hydro.gateway")

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 3
CHECK_INTERVAL = 5.0


def rotate_if_large(path: Path, max_bytes: int, backups: int = DEFAULT_BACKUPS) -> bool:
    """Rotate ``path`` when it is larger than ``max_bytes``; True when it was rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for i in range(backups, 1, -1):
        older = path.with_name(f"{path.name}.{i - 1}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i}"))
    if backups > 0:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True


def own_log_file() -> Path | None:
    """The regular file the gateway's stderr goes to (``<state>/gateway.log`` under ``hydro up``), if any."""
    with contextlib.suppress(OSError):
        target = Path(os.readlink("/proc/self/fd/2"))
        if target.is_file():
            return target
    return None


def rotate_all(state_dir: Path, max_bytes: int, backups: int = DEFAULT_BACKUPS) -> list[Path]:
    """One pass: the gateway's log and every ``<state>/logs/*.log``; returns what was rotated."""
    candidates = [path for folder in ("logs", "zygotes") if (state_dir / folder).is_dir()
                  for path in sorted((state_dir / folder).glob("*.log"))]
    own = own_log_file()
    if own is not None:
        candidates.append(own)
    rotated = []
    for path in candidates:
        try:
            if rotate_if_large(path, max_bytes, backups):
                rotated.append(path)
        except OSError as exc:  # a full disk or a file another user owns must not stop the gateway
            log.warning("cannot rotate %s: %s", path, exc)
    return rotated


async def rotate_loop(state_dir: Path, max_bytes: int, backups: int = DEFAULT_BACKUPS,
                      interval: float = CHECK_INTERVAL) -> None:
    """Check every ``interval`` seconds (in a thread: copying a file must not stall requests)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        await loop.run_in_executor(None, rotate_all, state_dir, max_bytes, backups)
