"""`hydro model rm` refuses a version an alias points at or a deployed function pins, unless --force.

A real gateway (local provider) answers the CLI's question about deployed functions' pins.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydro_serving.store import open_store
from tests.gateway_fixtures import gateway_factory  # noqa: F401 - the fixture


def _hydro(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_rm_of_an_aliased_or_pinned_version_is_refused_without_force(gateway_factory: Any,  # noqa: F811
                                                                     iris_model_file: Path) -> None:
    store = open_store()
    for _ in range(3):
        store.upload(iris_model_file, "iris")
    store.set_alias("iris", 1, "production")
    gw = gateway_factory("--discover-interval", "0")
    gw.deploy({"name": "scorer", "lang": "sklearn", "model": "iris:2"})
    where = ["--gateway", gw.url, "--state", str(gw.state_dir)]

    described = _hydro("describe", "scorer", *where)
    assert described.returncode == 0, described.stderr
    pin = json.loads(described.stdout)["modelPin"]
    assert pin == f"iris:2@sha256:{store.get_manifest('iris:2').content_digest()}"

    refused = _hydro("model", "rm", "iris:1", *where)
    assert refused.returncode == 1 and "aliased as production" in refused.stderr and "--force" in refused.stderr
    refused = _hydro("model", "rm", "iris:2", *where)
    assert refused.returncode == 1 and "pinned by deployed function(s) scorer" in refused.stderr
    assert store.versions("iris") == [1, 2, 3]

    forced = _hydro("model", "rm", "iris:1", "--force", *where)
    assert forced.returncode == 0 and "removed iris:1 and its alias(es) production" in forced.stdout, forced.stderr
    forced = _hydro("model", "rm", "iris:2", "--force", *where)
    assert forced.returncode == 0, forced.stderr
    assert store.versions("iris") == [3] and store.aliases("iris") == {}

    gw.stop()  # no gateway answers: the removal goes on, and says the pins were not checked
    removed = _hydro("model", "rm", "iris:3", *where)
    assert removed.returncode == 0 and "pins of deployed functions were not checked" in removed.stderr
