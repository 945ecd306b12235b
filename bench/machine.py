"""What ran the benchmark: CPU, cores, memory, Python, package versions, the command and the load generator.

Numbers from a shared 2-core machine mean little without this; the results JSON always carries it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("hydro-serving", "flask", "gunicorn", "aiohttp", "numpy", "scikit-learn", "joblib", "werkzeug",
            "prometheus-client")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The ``model name`` line of /proc/cpuinfo (or the platform's processor string)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_bytes(meminfo: str | None = None) -> int | None:
    """MemTotal from /proc/meminfo, in bytes."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return None
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def describe() -> dict[str, Any]:
    """The machine section of the results."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_bytes": memory_bytes(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "loadavg_at_start": list(load) if load else None,
    }
