"""axe-core for the accessibility test: installed from npm into a cache folder on first use.

Why not vendored: the test needs one file of a versioned npm package; ``npm install`` fetches it
once (the npm registry is reachable where the tests run) into ``$HYDRO_AXE_DIR`` or the user's
cache, and later runs reuse it. No npm, or no answer from the registry, fails the test with the
reason: an accessibility check that silently did not run would pass for the wrong reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

AXE_VERSION = "4.14.1"


def axe_dir() -> Path:
    base = os.environ.get("HYDRO_AXE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hydro-tests", f"axe-{AXE_VERSION}")
    return Path(base)


def axe_script() -> str:
    """The text of axe.min.js (installing axe-core@AXE_VERSION with npm when it is not cached)."""
    folder = axe_dir()
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    if not script.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the accessibility test needs npm to install axe-core (apt-get install npm)")
        folder.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder),
                              f"axe-core@{AXE_VERSION}"], capture_output=True, text=True, timeout=300, check=False,
                             stdin=subprocess.DEVNULL)
        if run.returncode != 0 or not script.is_file():
            raise RuntimeError(f"npm could not install axe-core@{AXE_VERSION}: {run.stderr[-2000:]}")
    return script.read_text()
