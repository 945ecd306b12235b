"""A wheel of the running hydro-serving package, so that function images install the exact runtime in use.

An image must install the runtime server without any release of hydro-serving on a package
index (a developer's working tree is what they want to ship). Building through a PEP 517
backend would need ``hatchling`` (and its build isolation, network) on the developer's machine,
so this module writes the wheel itself: it is a zip of the package files plus ``.dist-info``
(PEP 427/PEP 376), with the dependency metadata taken from ``pyproject.toml`` when running from a
source checkout, or from the installed distribution's metadata otherwise. Templates go to
``hydro_serving/_templates`` exactly as the real wheel build's ``force-include`` puts them.

The zip is deterministic (sorted entries, fixed timestamps): an unchanged package gives a
byte-identical wheel, so the image layer that installs it stays cached between builds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tomllib
import zipfile
from email.message import Message
from importlib import metadata
from pathlib import Path

DIST_NAME = "hydro-serving"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def package_dir() -> Path:
    import hydro_serving

    return Path(hydro_serving.__file__).resolve().parent


def _requirements() -> tuple[str, list[str], dict[str, list[str]]]:
    """(requires_python, dependencies, extras) from the checkout's pyproject or installed metadata."""
    pyproject = package_dir().parent / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == DIST_NAME:
            return (project.get("requires-python", ">=3.11"), list(project.get("dependencies", [])),
                    {k: list(v) for k, v in project.get("optional-dependencies", {}).items()})
    meta = metadata.metadata(DIST_NAME)
    extras: dict[str, list[str]] = {name: [] for name in meta.get_all("Provides-Extra") or []}
    deps: list[str] = []
    for req in meta.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        marker = marker.strip()
        if marker.startswith("extra ==") and marker.count(";") == 0 and " and " not in marker:
            name = marker.split("==", 1)[1].strip().strip("'\"")
            extras.setdefault(name, []).append(spec.strip())
        else:
            deps.append(req)
    return meta.get("Requires-Python") or ">=3.11", deps, extras


def _metadata_text(version: str) -> str:
    requires_python, deps, extras = _requirements()
    msg = Message()
    msg["Metadata-Version"] = "2.1"
    msg["Name"] = DIST_NAME
    msg["Version"] = version
    msg["Summary"] = "Hydro Serving runtime (built from a working tree for a function image)"
    msg["Requires-Python"] = requires_python
    for dep in deps:
        msg["Requires-Dist"] = dep
    for extra, reqs in sorted(extras.items()):
        msg["Provides-Extra"] = extra
        for req in reqs:
            msg["Requires-Dist"] = _with_extra_marker(req, extra)
    return msg.as_string()


def _with_extra_marker(req: str, extra: str) -> str:
    """``req ; extra == "x"``, and-ing the requirement's own environment marker when it has one
    (``tf-cpu; platform_machine == 'x86_64'`` must not become a requirement with two ``;``)."""
    spec, _, marker = req.partition(";")
    marker = marker.strip()
    if marker:
        return f'{spec.strip()} ; ({marker}) and extra == "{extra}"'
    return f'{spec.strip()} ; extra == "{extra}"'


def _package_files() -> list[tuple[str, Path]]:
    """(archive name, file) for the package and the templates it should carry."""
    pkg = package_dir()
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(dirpath) / name
            files.append((path.relative_to(pkg.parent).as_posix(), path))
    if not (pkg / "_templates").is_dir():  # editable install: templates live beside the package
        templates = pkg.parent / "templates"
        for dirpath, dirnames, filenames in os.walk(templates):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(_SKIP_SUFFIXES):
                    continue
                path = Path(dirpath) / name
                files.append((f"hydro_serving/_templates/{path.relative_to(templates).as_posix()}", path))
    return files


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def build_wheel(out_dir: Path) -> Path:
    """Write ``hydro_serving-<version>-py3-none-any.whl`` into ``out_dir`` and return its path."""
    from hydro_serving import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    dist_info = f"hydro_serving-{__version__}.dist-info"
    wheel_path = out_dir / f"hydro_serving-{__version__}-py3-none-any.whl"
    entries: list[tuple[str, bytes, int]] = [
        (name, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644) for name, path in _package_files()
    ]
    entries.append((f"{dist_info}/METADATA", _metadata_text(__version__).encode(), 0o644))
    entries.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: hydro-serving builder\n"
                    b"Root-Is-Purelib: true\nTag: py3-none-any\n", 0o644))
    entries.append((f"{dist_info}/entry_points.txt",
                    b"[console_scripts]\nhydro = hydro_serving.cli.main:main\n", 0o644))
    record_name = f"{dist_info}/RECORD"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data, _ in entries)
    record += f"{record_name},,\n"
    entries.append((record_name, record.encode(), 0o644))
    tmp = wheel_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(wheel_path)
    return wheel_path
