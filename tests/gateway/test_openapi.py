"""The OpenAPI document is what the gateway does (issue 12, point 6): schemathesis against a real gateway.

``schemathesis run`` with all its default checks, a fixed seed and a bounded number of examples per
operation, as any user of ``/openapi.json`` would run it: with the admin credentials and a deployed
function. Two settings are stated here rather than hidden:

* ``POST``/``PUT /system/functions`` may answer 400 to a schema-valid body: whether a deployment can
  run depends on the gateway's machine (the handler folder, template, image exist) and on other
  functions (a router's stages), which no schema can say; the document says so;
* ``GET /system/logs`` is run with ``follow=false``: ``follow=true`` streams until the client hangs up,
  by design, which a request-response check would take for a hang.

The run must also leave no traceback in the gateway's log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

CONFIG = """
seed = 12
[generation]
max-examples = {examples}

[[operations]]
include-path = "/system/functions"
include-method = ["POST", "PUT"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409"]

[[operations]]
include-path = "/system/logs"
parameters = {{ follow = false }}
"""


def test_schemathesis_default_checks_pass(gateway: Any, echo_dir: Path, tmp_path: Path) -> None:
    gateway.deploy(gateway.python_spec("echo", echo_dir))
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(examples=25))
    cli = Path(sys.executable).with_name("schemathesis")
    argv = [str(cli), "--config-file", str(config), "run", gateway.url + "/openapi.json",
            "-H", f"Authorization: Bearer {gateway.token}", "--no-color", "--request-timeout", "20"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert "Traceback" not in gateway.log(), gateway.log()[-4000:]
