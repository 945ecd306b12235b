"""The gateway discovers models that other tools put into the store, then serves them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hydro_serving.store import open_store


def test_files_copied_into_the_store_become_a_version_the_gateway_serves(gateway_factory: Any,
                                                                        iris_model_file: Path) -> None:
    # another client (here: a plain file copy into the directory store; `aws s3 cp` for S3) drops a model
    root = Path(os.environ["HYDRO_STORE"].removeprefix("file://"))
    dropped = root / "models" / "iris-dropped" / "model.joblib"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(iris_model_file.read_bytes())
    old = time.time() - 120  # older than the minimum age, so it is not taken for an upload in progress
    os.utime(dropped, (old, old))

    gw = gateway_factory("--discover-interval", "0.5")
    store = open_store()

    def discovered() -> bool:
        try:
            return store.versions("iris-dropped") == [1]
        except Exception:  # NotFound until the first pass ran
            return False

    gw.wait_for(discovered, timeout=30, what="discovery of iris-dropped")
    assert store.get_manifest("iris-dropped:1").framework == "sklearn"

    gw.deploy({"name": "iris", "lang": "sklearn", "model": "iris-dropped:1"})
    status, _, body = gw.invoke("iris", [[5.1, 3.5, 1.4, 0.2]])
    assert status == 200, body
    assert body == [0]


def test_discovery_off_leaves_files_alone(gateway_factory: Any, iris_model_file: Path) -> None:
    root = Path(os.environ["HYDRO_STORE"].removeprefix("file://"))
    dropped = root / "models" / "untouched" / "model.joblib"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(iris_model_file.read_bytes())
    os.utime(dropped, (time.time() - 120, time.time() - 120))
    gw = gateway_factory("--discover-interval", "0")
    time.sleep(1.0)  # a window in which a discovery pass would have run; not a timing assertion
    assert dropped.exists()
    assert gw.admin("GET", "/system/functions")[0] == 200
