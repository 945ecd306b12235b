"""Removing a stage a deployed pipeline uses (issue 14 point 11).

Refused with 409 naming the pipelines unless forced (API and ``hydro remove --force``); once forced, the
pipeline answers 503 naming the missing stage before any stage runs (stage 1 counts no invocation).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def hydro(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}, check=False)


def test_remove_of_a_used_stage(gateway: Any, echo_dir: Path) -> None:
    gw = gateway
    gw.deploy(gw.python_spec("first", echo_dir))
    gw.deploy(gw.python_spec("second", echo_dir))
    gw.deploy({"name": "pipe", "lang": "router", "chain": ["first", "second"],
               "scale": {"min": 0, "max": 1, "idle": 300}})
    status, _, body = gw.invoke("pipe", {"x": 1})
    assert status == 200, body

    status, out = gw.admin("DELETE", "/system/functions", {"functionName": "second"})
    assert status == 409 and out["function"] == "second" and out["details"]["pipelines"] == ["pipe"], out
    assert "pipe" in out["error"] and "--force" in out["error"]
    status, out = gw.admin("DELETE", "/system/function/second")
    assert status == 409, out
    status, out = gw.admin("DELETE", "/system/functions", {"functionName": "second", "force": "yes"})
    assert status == 400 and out["field"] == "force", out  # malformed: named, nothing removed
    assert gw.status("second")["name"] == "second"

    env = {"HYDRO_STATE": str(gw.state_dir), "HYDRO_GATEWAY": gw.url}
    out = hydro("remove", "second", env=env)
    assert out.returncode != 0 and "pipe" in out.stderr and "--force" in out.stderr, out.stderr
    out = hydro("remove", "second", "--force", env=env)
    assert out.returncode == 0, out.stderr
    assert "removed second" in out.stdout and "pipe" in out.stderr

    before = gw.status("first")["invocationCount"]
    status, _, body = gw.invoke("pipe", {"x": 1})
    assert status == 503, body
    assert body["stage"] == "second" and body["function"] == "pipe" and "second" in body["error"], body
    assert gw.status("first")["invocationCount"] == before  # no stage ran

    gw.deploy(gw.python_spec("second", echo_dir))  # back: the pipeline works again
    status, _, body = gw.invoke("pipe", {"x": 1})
    assert status == 200, body

    status, out = gw.admin("DELETE", "/system/functions", {"functionName": "pipe"})  # a pipeline itself: fine
    assert status == 202, out
    status, out = gw.admin("DELETE", "/system/functions", {"functionName": "second"})  # no user left
    assert status == 202, out
