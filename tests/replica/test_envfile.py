"""The one env-file parser: strict, and every error names the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydro_serving.errors import ConfigError
from hydro_serving.replica.envfile import parse_env_text, read_env_file


def test_accepted_forms(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text("# comment\n\nexport A=1\nB = 'two words'\nC=\"x=y # not a comment\"\nD=\nE=plain value  \n"
                    "F=''\n")
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "x=y # not a comment", "D": "", "E": "plain value",
                                   "F": ""}


@pytest.mark.parametrize(("text", "line", "what"), [
    ("A=1\nbroken\n", 2, "expected KEY=VALUE"),
    ("A=1\n\n=value\n", 3, "expected KEY=VALUE"),
    ("1A=x\n", 1, "expected KEY=VALUE"),
    ("A B=x\n", 1, "expected KEY=VALUE"),
    ("A='unbalanced\n", 1, "unbalanced ' quote"),
    ('A="x\'\n', 1, 'unbalanced " quote'),
    ("A=x'\n", 1, "ends with a quote"),
    ('A="\n', 1, 'unbalanced " quote'),
])
def test_bad_lines_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = tmp_path / "bad.env"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_env_file(path, field="functions.f.environment_file[0]")
    assert f"{path} line {line}" in info.value.message and what in info.value.message
    assert info.value.field == "functions.f.environment_file[0]"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.env"):
        read_env_file(tmp_path / "absent.env")


def test_values_are_never_interpreted() -> None:
    assert parse_env_text("A=$HOME\nB=`id`\nC='$(id)'\n", "x") == {"A": "$HOME", "B": "`id`", "C": "$(id)"}
