"""A deploy that cannot pin its model says so (issue 14 point 10, the unpinned case).

The function's store is a real S3 bucket (the Ceph RGW) whose credentials are only in the
function's ``environment``; the gateway process has none, so it cannot resolve ``iris:production``
and deploys it unpinned. ``hydro deploy`` must say that on the function's line, and ``hydro describe``
must show why, because an alias move will then not roll the replicas. A stack that sets the
gateway's own annotation is not believed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.store import open_store
from tests.gateway_fixtures import gateway_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.s3

STACK = """\
version: 1.0
provider: {{name: hydro, gateway: {url}}}
functions:
  scorer:
    lang: sklearn
    model: iris:production
    environment: {{HYDRO_STORE: "{store}", AWS_ENDPOINT_URL: "{endpoint}", AWS_ACCESS_KEY_ID: "{key}",
                   AWS_SECRET_ACCESS_KEY: "{secret}", AWS_DEFAULT_REGION: us-east-1}}
    scale: {{min: 0, max: 1, idle: 300}}
  liar:
    lang: sklearn
    model: iris:1
    environment: {{HYDRO_STORE: "{local}"}}
    annotations: {{hydro.model/unpinned: "nothing to see"}}
"""


def _hydro(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRO_STATE": str(state)}
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def test_an_alias_the_gateway_cannot_resolve_deploys_unpinned_and_says_so(
        gateway_factory: Any, rgw_s3: dict[str, str], iris_model_file: Path,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket_url = f"s3://hydro-unpinned-{uuid.uuid4().hex[:8]}/models"
    for key, value in rgw_s3.items():
        monkeypatch.setenv(key, value)
    store = open_store(bucket_url)
    store.upload(iris_model_file, "iris")
    store.set_alias("iris", 1, "production")
    local_url = f"file://{tmp_path / 'local-store'}"
    open_store(local_url).upload(iris_model_file, "iris")
    for key in list(os.environ):  # the gateway (and the CLI) inherit no S3 credentials: only the function has them
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))

    gw = gateway_factory("--discover-interval", "0")
    stack = tmp_path / "stack.yml"
    stack.write_text(STACK.format(url=gw.url, store=bucket_url, endpoint=rgw_s3["AWS_ENDPOINT_URL"],
                                  key=rgw_s3["AWS_ACCESS_KEY_ID"], secret=rgw_s3["AWS_SECRET_ACCESS_KEY"],
                                  local=local_url))
    deployed = _hydro("deploy", "-f", str(stack), state=gw.state_dir)
    assert deployed.returncode == 0, deployed.stderr
    line = next(ln for ln in deployed.stdout.splitlines() if " scorer " in ln)
    assert "(model iris:production not pinned: the gateway cannot read the function's store " in line, line
    assert bucket_url in line and "moving an alias does not roll them" in line, line
    assert rgw_s3["AWS_SECRET_ACCESS_KEY"] not in deployed.stdout

    described = _hydro("describe", "scorer", "-f", str(stack), state=gw.state_dir)
    assert described.returncode == 0, described.stderr
    out = json.loads(described.stdout)
    assert out["modelPin"] is None and "cannot read the function's store" in out["modelUnpinned"], out

    # attacker: a stack cannot write the gateway's annotation; a pinned function says nothing of the kind
    liar = json.loads(_hydro("describe", "liar", "-f", str(stack), state=gw.state_dir).stdout)
    assert liar["modelPin"].startswith("iris:1@sha256:") and liar["modelUnpinned"] is None, liar
    assert "hydro.model/unpinned" not in liar["annotations"]
    liar_line = next(ln for ln in deployed.stdout.splitlines() if " liar " in ln)
    assert "not pinned" not in liar_line and "(model iris:1 = iris:1@sha256:" in liar_line
