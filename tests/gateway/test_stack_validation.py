"""Deploy validates the whole stack first, then applies it (issue 14 point 9).

A stack whose pipeline check fails changes nothing (before, the earlier functions were already
updated); a failure while applying says exactly which functions were applied and which were not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.errors import HydroError
from hydro_serving.gateway.client import DeployIncomplete, GatewayClient
from hydro_serving.stack import load_stack

STACK = """\
functions:
  first:
    lang: python3
    handler: ./echo
    environment: {{VERSION: "{version}"}}
    signature:
      inputs: [{{name: a, dtype: float64, shape: [-1]}}]
      outputs: [{{name: a, dtype: float64, shape: [-1]}}]
  second:
    lang: python3
    handler: ./echo2
    signature:
      inputs: [{{name: {second_input}, dtype: float64, shape: [-1]}}]
      outputs: [{{name: out, dtype: float64, shape: [-1]}}]
  pipe:
    lang: router
    chain: [first, second]
"""


def hydro(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}, cwd=cwd, check=False)


@pytest.fixture
def project(tmp_path: Path, gateway: Any) -> Path:
    gateway.write_handler(tmp_path / "p" / "echo")
    gateway.write_handler(tmp_path / "p" / "echo2")
    return tmp_path / "p"


def test_a_failing_pipeline_check_changes_nothing(gateway: Any, project: Path) -> None:
    env = {"HYDRO_STATE": str(gateway.state_dir), "HYDRO_GATEWAY": gateway.url}
    (project / "stack.yml").write_text(STACK.format(version="v1", second_input="a"))
    out = hydro("deploy", cwd=project, env=env)
    assert out.returncode == 0, out.stderr
    generation = gateway.status("first")["status"]["generation"]

    # v2 changes 'first' and breaks the pipeline contract (second now wants 'b', first gives 'a')
    (project / "stack.yml").write_text(STACK.format(version="v2", second_input="b"))
    out = hydro("deploy", cwd=project, env=env)
    assert out.returncode != 0
    assert "pipe" in out.stderr and "second" in out.stderr, out.stderr
    assert "updated" not in out.stdout and "Traceback" not in out.stderr
    status = gateway.status("first")
    assert status["envVars"]["VERSION"] == "v1" and status["status"]["generation"] == generation  # untouched
    assert gateway.status("second")["hydro"]["signature"]["inputs"][0]["name"] == "a"

    # a stack whose pipeline names a function that exists nowhere: refused before anything is created
    (project / "stack.yml").write_text(STACK.format(version="v3", second_input="a").replace(
        "chain: [first, second]", "chain: [first, nowhere]"))
    out = hydro("deploy", cwd=project, env=env)
    assert out.returncode != 0 and "nowhere" in out.stderr and "functions.pipe.chain[1]" in out.stderr, out.stderr
    assert gateway.status("first")["envVars"]["VERSION"] == "v1"


def test_a_failure_while_applying_says_what_changed(gateway: Any, project: Path) -> None:
    (project / "stack.yml").write_text(STACK.format(version="v1", second_input="a"))
    stack = load_stack(project / "stack.yml")
    client = GatewayClient(gateway.url, gateway.token)
    applied = []

    def after(name: str, action: str) -> None:  # the folder of 'second' disappears after the check passed
        applied.append((name, action))
        if name == "first":
            shutil.rmtree(project / "echo2")

    with pytest.raises(DeployIncomplete) as info:
        client.deploy_stack(stack, on_result=after)
    exc = info.value
    assert isinstance(exc, HydroError) and exc.function == "second"
    assert exc.done == [("first", "created")] and exc.pending == ["second", "pipe"]
    assert "Applied before it: first (created)" in exc.message
    assert "Not applied (left as they were): second, pipe" in exc.message
    assert exc.field == "functions.second.handler"
    _, functions = gateway.admin("GET", "/system/functions")
    assert [f["name"] for f in functions] == ["first"]
    assert applied == [("first", "created")]


def test_validate_endpoint_refuses_malformed_batches(shared_gateway: Any) -> None:
    """Hostile bodies: 400 naming the field, nothing applied."""
    gw = shared_gateway
    for body, field in (([], "functions"), ({"functions": "x"}, "functions"),
                        ({"functions": [{"service": "Bad_Name"}]}, "service"),
                        ({"functions": [{"service": "a", "hydro": {"lang": "python3", "handler": "/tmp"}}] * 2},
                         "functions[1]")):
        status, out = gw.admin("POST", "/system/validate", body)
        assert status == 400 and out["field"] == field, (body, out)
    status, _, out = gw.request("POST", "/system/validate", {"functions": []})
    assert status == 401, out  # admin only
    status, out = gw.admin("POST", "/system/validate", {"functions": []})
    assert status == 200 and out == {"valid": True, "functions": []}
    _, functions = gw.admin("GET", "/system/functions")
    assert functions == []
