"""Copying files into a build context without ever reaching outside the project.

A build context is what a Docker engine sees, and an image may be pushed to a registry: a stray
``handler: ../..`` or a symlink to ``~/.aws`` must never smuggle files from outside the project
into it. Like openfaas go-sdk's ``CreateBuildContext``/``pathInScope``, every path is resolved
(symlinks followed) and checked against the project root before anything is copied; a symlink
whose target stays inside the project is copied as the file or folder it points to, one that
escapes is an error naming the link.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from hydro_serving.errors import StackError

# Never useful in an image and often large or private.
SKIP_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache",
                        ".ruff_cache", ".DS_Store"})
SKIP_SUFFIXES = (".pyc", ".pyo")


class OutOfScope(StackError):
    """A path given for a function resolves outside the project folder."""

    code = "path_out_of_scope"


def in_scope(path: Path, root: Path) -> bool:
    """True when ``path`` (symlinks resolved) is ``root`` itself or inside it."""
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == real_root or real_root in real.parents


def resolve_in_scope(relative: str, root: Path, *, field: str, function: str | None = None) -> Path:
    """``root / relative`` resolved, or :class:`OutOfScope` when it leaves the project."""
    candidate = Path(relative).expanduser()
    path = candidate if candidate.is_absolute() else root / candidate
    if not in_scope(path, root):
        raise OutOfScope(
            f"{field}: '{relative}' resolves to {os.path.realpath(path)}, outside the project {root}; "
            "a build context may only hold files from the project folder", field=field, function=function)
    return Path(os.path.realpath(path))


def copy_in_scope(src: Path, dst: Path, root: Path, *, field: str, function: str | None = None,
                  exclude: Iterable[Path] = ()) -> list[Path]:
    """Copy the file or folder ``src`` to ``dst``; every file (and symlink target) must be under ``root``.

    ``exclude`` lists folders never to descend into (the build output folder when a handler is
    the project root). Returns the files written, so callers can report or check them.
    """
    excluded = {Path(os.path.realpath(p)) for p in exclude}
    written: list[Path] = []
    visiting: set[Path] = set()

    def check(path: Path) -> Path:
        real = Path(os.path.realpath(path))
        if not in_scope(real, root):
            raise OutOfScope(
                f"{field}: {path} is a link to {real}, outside the project {root}; "
                "copy the file into the project instead", field=field, function=function)
        return real

    def copy(path: Path, target: Path) -> None:
        real = check(path)
        if real.is_dir():
            if real in excluded or real in visiting:  # excluded output, or a symlink loop
                return
            visiting.add(real)
            target.mkdir(parents=True, exist_ok=True)
            for child in sorted(path.iterdir()):
                if child.name in SKIP_NAMES or child.name.endswith(SKIP_SUFFIXES):
                    continue
                copy(child, target / child.name)
            visiting.discard(real)
        elif real.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real, target)
            shutil.copymode(real, target)
            written.append(target)
        elif not real.exists():
            raise StackError(f"{field}: {path} does not exist (a broken link?)", field=field, function=function)
        # sockets, fifos and devices are not build inputs: skipped on purpose

    copy(src, dst)
    return written
