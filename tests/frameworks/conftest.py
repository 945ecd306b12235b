"""Fixtures for the framework templates' tests: one isolated hydro home and one real gateway per module.

The gateway is the gateway engineer's test harness (``tests/gateway/conftest.py``), loaded by path
because a test module cannot import another folder's conftest. Module-scoped fixtures run before the
per-test autouse fixture that isolates HYDRO_*, so the environment is set here for the module's life.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.frameworks.helpers import TIMINGS

HERE = Path(__file__).resolve().parent


def _gateway_harness() -> Any:
    name = "_hydro_tests_gateway_harness"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "gateway" / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fw_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HYDRO_HOME/STORE/CACHE/STATE for the whole module: the gateway and its replicas inherit them."""
    home = tmp_path_factory.mktemp("fw-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYDRO_HOME", str(home))
        mp.setenv("HYDRO_STORE", f"file://{home / 'store'}")
        mp.setenv("HYDRO_CACHE", str(home / "cache"))
        mp.setenv("HYDRO_STATE", str(home / "state"))
        mp.setenv("HYDRO_VENVS", str(home / "venvs"))
        yield home


@pytest.fixture(scope="module")
def fw_gateway(fw_home: Path) -> Iterator[Any]:
    """One real gateway (local provider) for the module; stopped with every replica at the end."""
    gw = _gateway_harness().Gateway(fw_home / "state")
    gw.start()
    yield gw
    gw.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "framework templates: measured")
        for key, value in TIMINGS.items():
            terminalreporter.write_line(f"{key}: {value}")
