"""The runtime wheel put into every build context: valid (pip installs it), complete, deterministic."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hydro_serving.builder import wheel


def test_pip_installs_the_wheel_and_it_carries_the_templates(tmp_path: Path) -> None:
    whl = wheel.build_wheel(tmp_path / "dist")
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                          str(whl)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    probe = ("import hydro_serving, hydro_serving.builder.templates as t; print(hydro_serving.__file__); "
             "print(t.get_template('sklearn').path)")
    # -S: no .pth processing, so the editable install's import hook cannot shadow the installed copy;
    # PyYAML still comes from this environment's site-packages (after the target).
    import yaml

    site = str(Path(yaml.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), site])}
    env.pop("HYDRO_TEMPLATES", None)
    res = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60, env=env,
                         cwd=tmp_path,
                         check=False)
    assert res.returncode == 0, res.stderr
    module_file, template_dir = res.stdout.split()
    assert module_file.startswith(str(target))
    assert template_dir == str(target / "hydro_serving" / "_templates" / "sklearn")
    assert (target / "bin" / "hydro").is_file()  # the console script from entry_points.txt


def test_wheel_is_deterministic_and_its_record_matches(tmp_path: Path) -> None:
    first = wheel.build_wheel(tmp_path / "a").read_bytes()
    second_path = wheel.build_wheel(tmp_path / "b")
    assert second_path.read_bytes() == first
    with zipfile.ZipFile(second_path) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = [line.split(",") for line in zf.read(record_name).decode().splitlines()]
        assert {r[0] for r in rows} == set(zf.namelist())
        for name, digest, size in rows:
            if name == record_name:
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data)
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in zf.namelist())


def test_metadata_from_the_installed_distribution_when_no_pyproject(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a wheel install (no pyproject.toml beside the package): dependencies come from installed metadata."""
    from_pyproject = wheel._metadata_text("9.9.9")
    fake_pkg = tmp_path / "site" / "hydro_serving"
    fake_pkg.mkdir(parents=True)
    monkeypatch.setattr(wheel, "package_dir", lambda: fake_pkg)
    from_installed = wheel._metadata_text("9.9.9")
    for text in (from_pyproject, from_installed):
        assert "Name: hydro-serving" in text and "Version: 9.9.9" in text
        assert "Requires-Dist: flask" in text and "Provides-Extra: sklearn" in text
        assert any(line.startswith("Requires-Dist: scikit-learn") and 'extra == "sklearn"' in line
                   for line in text.splitlines())


def test_every_requirement_in_the_metadata_parses() -> None:
    """Extras whose requirements carry their own environment marker (tensorflow-cpu on x86_64) stay valid."""
    from packaging.requirements import Requirement

    from hydro_serving.builder.wheel import _metadata_text

    lines = [line.split(":", 1)[1].strip() for line in _metadata_text("0.1.0").splitlines()
             if line.startswith("Requires-Dist")]
    parsed = [Requirement(line) for line in lines]
    tf = [r for r in parsed if r.name == "tensorflow-cpu"]
    assert tf and tf[0].marker.evaluate({"extra": "tensorflow", "platform_machine": "x86_64"})
    assert not tf[0].marker.evaluate({"extra": "tensorflow", "platform_machine": "aarch64"})
