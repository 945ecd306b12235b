"""Virtual environments for the peers under ``bench/.venvs``, built once and reused across runs.

A peer's dependencies (MLflow alone pulls in hundreds of MB) must not leak into the project's
environment, and rebuilding them every run would make the suite unusable, so each venv records
the requirement list it was built from and is rebuilt only when that list changes. scikit-learn
is pinned to the host's version so every server unpickles the very same model file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VENV_ROOT = Path(__file__).resolve().parents[1] / ".venvs"
MARKER = "bench-venv.json"


@dataclass(frozen=True)
class VenvResult:
    """A usable venv (``python`` set) or the reason there is none."""

    python: Path | None
    reason: str = ""
    built_seconds: float | None = None


def venv_dir(name: str, root: Path = VENV_ROOT) -> Path:
    return root / name


def is_built(name: str, requirements: list[str], root: Path = VENV_ROOT) -> bool:
    """True when the venv exists and was built from exactly ``requirements``."""
    marker = venv_dir(name, root) / MARKER
    try:
        return json.loads(marker.read_text()).get("requirements") == requirements
    except (OSError, ValueError):
        return False


def ensure_venv(name: str, requirements: list[str], *, build: bool = True, root: Path = VENV_ROOT,
                log: Path | None = None, timeout: float = 1500.0) -> VenvResult:
    """The venv's python, building it with pip when missing and ``build`` allows it."""
    folder = venv_dir(name, root)
    python = folder / "bin" / "python"
    if is_built(name, requirements, root):
        return VenvResult(python)
    if not build:
        return VenvResult(None, f"venv {folder} not built yet (run the full mode, or `python -m bench.peers.venvs`)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log = log or folder.with_suffix(".install.log")
    with open(log, "wb") as out:
        steps = [[sys.executable, "-m", "venv", "--clear", str(folder)],
                 [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                 [str(python), "-m", "pip", "install", "--quiet", *requirements]]
        for argv in steps:
            try:
                code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                return VenvResult(None, f"`{' '.join(argv[:4])} ...` took longer than {timeout:.0f}s (log: {log})")
            if code != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                return VenvResult(None, f"pip failed for {name} (exit {code}): {' | '.join(tail)} (log: {log})")
    (folder / MARKER).write_text(json.dumps({"requirements": requirements, "built": time.time()}))
    return VenvResult(python, built_seconds=time.monotonic() - started)


def installed_versions(python: Path, packages: list[str]) -> dict[str, str]:
    """``{package: version}`` as installed in a venv (for the results' record of what ran)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    try:
        done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout or "{}")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def main() -> None:
    """Build every peer's venv now (what the full mode would do on its first run)."""
    from bench.peers.servers import PEERS

    for peer in PEERS:
        result = ensure_venv(peer.name, peer.requirements())
        print(f"{peer.name}: {result.python or result.reason}"
              + (f" (built in {result.built_seconds:.0f}s)" if result.built_seconds else ""))


if __name__ == "__main__":
    main()
