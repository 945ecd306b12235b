"""``hydro stream`` refuses bad configuration with one line naming the flag, before touching Kafka."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def hydro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL, env=env)


def test_stream_without_brokers_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    out = hydro("stream")
    assert out.returncode == 1
    assert "error: no Kafka brokers" in out.stderr and "--bootstrap-servers" in out.stderr  # named once
    assert "Traceback" not in out.stderr


def test_stream_with_a_bad_refresh_or_stack_file_names_it(tmp_path: Path) -> None:
    out = hydro("stream", "-b", "127.0.0.1:1", "--refresh", "soon")
    assert out.returncode == 1 and "--refresh: not a duration" in out.stderr
    bad = tmp_path / "stack.yml"
    bad.write_text("functions:\n  f:\n    lang: python3\n    streaming: {in: a, out: a, errors: e}\n")
    out = hydro("stream", "-b", "127.0.0.1:1", "-f", str(bad))
    assert out.returncode == 1 and "functions.f.streaming.in" in out.stderr and "Traceback" not in out.stderr
