"""The README's runnable shell blocks, run as written against a gateway this test starts (issue 14's doc-check).

A block is runnable when the line before its opening fence (blank lines aside) is the HTML comment
``<!-- doc-check -->``, invisible on GitHub. Such a block is run whole by ``bash -euo pipefail`` (so
a variable set on one line is there on the next, and the first failing command fails the test),
in a folder holding the files the README's examples name (``model.joblib``, ``sig.yml``,
``train.csv``, ``request.json``), with the CLI of this checkout first on ``PATH`` and these set:
``HYDRO_GATEWAY`` and ``GATEWAY`` (the gateway's URL), ``HYDRO_STATE`` (its state, so the CLI holds
its admin token), ``HYDRO_STORE`` (a store of the test's own) and ``HOME`` (a temporary one).

Optional arguments written ``[--flag VALUE]`` are left out, as a reader trying the command would.
A block marked runnable must run here: mark only blocks that need nothing this machine lacks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_fixtures import python_spec

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- doc-check -->"
OPTIONAL = re.compile(r" \[--?[A-Za-z][^\]\n]*\]")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    script: str

    @property
    def first_command(self) -> str:
        return next(line for line in self.script.splitlines() if line.strip() and not line.startswith("#"))


def runnable_blocks(text: str) -> list[Block]:
    """Every fenced ``bash``/``sh`` block right after the marker; a marker before anything else is an error."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = lines[j].strip() if j < len(lines) else ""
        if fence not in ("```bash", "```sh"):
            raise ValueError(f"README line {i + 1}: {MARKER} must come right before a ```bash or ```sh block")
        end = next((k for k in range(j + 1, len(lines)) if lines[k].strip() == "```"), None)
        if end is None:
            raise ValueError(f"README line {j + 1}: the block marked runnable is never closed")
        blocks.append(Block(j + 1, "\n".join(OPTIONAL.sub("", row) for row in lines[j + 1:end]) + "\n"))
    return blocks


def test_the_marker_parser() -> None:
    text = ("text\n<!-- doc-check -->\n\n```bash\nhydro model list [--json]\necho ok\n```\n"
            "```bash\nnot marked\n```\n<!-- doc-check -->\n```bash\necho [not an option]\n```\n")
    blocks = runnable_blocks(text)
    assert [b.script for b in blocks] == ["hydro model list\necho ok\n", "echo [not an option]\n"]
    assert blocks[0].line == 4 and blocks[0].first_command == "hydro model list"
    with pytest.raises(ValueError, match="must come right before"):
        runnable_blocks("<!-- doc-check -->\n```yaml\na: 1\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        runnable_blocks("<!-- doc-check -->\n```bash\necho\n")


# ---- the files the README's examples name -------------------------------------------------------------


def _write_examples(folder: Path) -> None:
    """A tiny real model on two numeric features, its signature and training data, a request body."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    joblib.dump(LogisticRegression().fit(x, y), folder / "model.joblib")
    (folder / "sig.yml").write_text("inputs:\n  - {name: tenure, dtype: float64, shape: [-1]}\n"
                                    "  - {name: spend, dtype: float64, shape: [-1]}\n"
                                    "outputs:\n  - {name: churn, dtype: int64, shape: [-1]}\n")
    (folder / "train.csv").write_text("tenure,spend,churn\n" + "".join(
        f"{a:.4f},{b:.4f},{c}\n" for (a, b), c in zip(x, y, strict=True)))
    (folder / "request.json").write_text('[{"tenure": 3, "spend": 20.5}]')


def _run(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = cwd / f"block-{block.line}.sh"
    script.write_text(block.script)
    return subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


# what each runnable block must show besides exiting 0, by its first command
EXPECTED: dict[str, Any] = {
    "hydro model upload": lambda out, cwd: (
        "churn:1" in out.stdout and "churn:2" in out.stdout and (cwd / "out" / "model.joblib").is_file()),
    "KEY=$(hydro key create": lambda out, cwd: '"echo"' in out.stdout and "shop" in out.stdout,
}


def test_readme_runnable_blocks_run(gateway: Any, echo_dir: Path, tmp_path: Path) -> None:
    blocks = runnable_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 2, "the README lost its doc-check markers"
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    _write_examples(work)
    # the function the README's key examples call: open to its key only
    gateway.deploy(python_spec("product-matching", echo_dir, auth="key"))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "HYDRO_GATEWAY": gateway.url, "GATEWAY": gateway.url, "HYDRO_STATE": str(gateway.state_dir),
           "HYDRO_STORE": f"file://{tmp_path / 'store'}", "HYDRO_CACHE": str(tmp_path / "cache"), "HOME": str(home),
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    env.pop("HYDRO_TOKEN", None)
    for block in blocks:
        out = _run(block, work, env)
        where = f"README block at line {block.line}:\n{block.script}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
        assert out.returncode == 0, where
        assert "Traceback" not in out.stderr, where
        check = next((f for prefix, f in EXPECTED.items() if block.first_command.startswith(prefix)), None)
        assert check is not None, f"a new runnable block needs its expectation in EXPECTED: {where}"
        assert check(out, work), where
    assert (home / ".hydro-keys" / "hydro-signing.key").is_file()  # the model block's keys went to ~
