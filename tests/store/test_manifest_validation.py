"""A stored manifest is untrusted input: every field is checked before use, and nothing outside is touched.

The attacker here can write any object into the store (plain boto3, or a file in the directory
store) but nothing else. Before the fix, ``"sha256": "../../victim.txt"`` was used as a cache path
and the "corrupt" file there was deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.errors import StoreError
from hydro_serving.store import ModelStore, fetch_model

from .conftest import run_cli

GOOD_SHA = hashlib.sha256(b"x").hexdigest()


def _manifest(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"format": 1, "name": "m", "version": 2, "framework": "onnx",
                            "files": [{"path": "model.onnx", "size": 1, "sha256": GOOD_SHA}],
                            "signature": None, "metadata": {}, "created_at": "", "training_profile": None,
                            "origin": "upload"}
    for key, value in changes.items():
        data[key] = value
    return data


def _file(**changes: Any) -> list[dict[str, Any]]:
    return [{"path": "model.onnx", "size": 1, "sha256": GOOD_SHA, **changes}]


BAD = [
    (_manifest(files=_file(sha256="../../victim.txt")), "files[0].sha256"),
    (_manifest(files=_file(sha256=GOOD_SHA.upper())), "files[0].sha256"),
    (_manifest(files=_file(sha256=GOOD_SHA[:63])), "files[0].sha256"),
    (_manifest(files=_file(path="../../victim.txt")), "files[0].path"),
    (_manifest(files=_file(path="/etc/passwd")), "files[0].path"),
    (_manifest(files=_file(path="a/./b")), "files[0].path"),
    (_manifest(files=_file(path="manifest.json")), "files[0].path"),
    (_manifest(files=_file(path="a\\..\\..\\x")), "files[0].path"),
    (_manifest(files=_file(size="1")), "files[0].size"),
    (_manifest(files=_file(size=-1)), "files[0].size"),
    (_manifest(files=_file(size=True)), "files[0].size"),
    (_manifest(files=_file(size=1.5)), "files[0].size"),
    (_manifest(files=[{"path": "model.onnx", "size": 1}]), "files[0].sha256"),
    (_manifest(files=[*_file(), *_file()]), "files[1].path"),
    (_manifest(files=[]), "files"),
    (_manifest(files="model.onnx"), "files"),
    (_manifest(name="../x"), "name"),
    (_manifest(version="2"), "version"),
    (_manifest(version=0), "version"),
    (_manifest(framework="../x"), "framework"),
    (_manifest(origin="trusted"), "origin"),
    (_manifest(metadata=[1]), "metadata"),
    (_manifest(evil=1), "evil"),
    (_manifest(format=2), "format"),
]


def test_a_bad_manifest_field_is_named_and_touches_nothing(store: ModelStore, store_url: str, tmp_path: Path,
                                                           put_foreign: Callable[[str, bytes], None],
                                                           iris_model_file: Path) -> None:
    store.upload(iris_model_file, "m")  # m:1, a real version beside the forged ones
    cache = tmp_path / "cache"
    victims = [tmp_path / "victim.txt", cache / "victim.txt", tmp_path / "x"]
    for victim in victims:
        victim.parent.mkdir(parents=True, exist_ok=True)
        victim.write_text("precious")
    for i, (bad, fld) in enumerate(BAD):
        version = i + 2
        forged = {**bad, "version": version} if fld != "version" else bad
        put_foreign(f"models/m/{version}/.claim", b"{}")
        put_foreign(f"models/m/{version}/model.onnx", b"x")
        put_foreign(f"models/m/{version}/manifest.json", json.dumps(forged).encode())

        with pytest.raises(StoreError) as caught:
            store.get_manifest(f"m:{version}")
        assert caught.value.field == fld and fld in caught.value.message, (fld, caught.value.message)
        with pytest.raises(StoreError):
            fetch_model(f"m:{version}", store_url, cache)
        with pytest.raises(StoreError):
            store.pull(f"m:{version}", tmp_path / "pulled")
        assert not (tmp_path / "pulled").exists() or not any((tmp_path / "pulled").rglob("*"))
        # latest skips the damaged version (a warning names it); it can always be removed
        assert store.get_manifest("m").version == 1
        store.remove("m", version)
        assert store.versions("m") == [1]
        for victim in victims:
            assert victim.read_text() == "precious", fld


def test_cli_names_the_field_and_removes_a_broken_version(tmp_path: Path, iris_model_file: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    store = ["model", "--store", f"file://{root}"]
    assert run_cli([*store, "upload", str(iris_model_file), "--name", "m"], capsys)[0] == 0
    version = root / "models" / "m" / "2"
    version.mkdir(parents=True)
    (version / ".claim").write_text("{}")
    (version / "manifest.json").write_text(json.dumps(_manifest(files=_file(sha256="../../x"))))
    code, _, err = run_cli([*store, "show", "m:2"], capsys)
    assert code == 1 and "files[0].sha256" in err and "Traceback" not in err
    (version / "manifest.json").write_bytes(b"")  # what a crash used to leave: an empty manifest
    code, _, err = run_cli([*store, "show", "m:2"], capsys)
    assert code == 1 and "not JSON" in err
    assert run_cli([*store, "show", "m"], capsys)[1].startswith("model:      m:1")  # latest still works
    monkeypatch.setenv("HYDRO_GATEWAY", "http://127.0.0.1:9")
    code, out, err = run_cli([*store, "rm", "m:2"], capsys)
    assert (code, out.strip()) == (0, "removed m:2"), err
    assert not (version / "manifest.json").exists()
