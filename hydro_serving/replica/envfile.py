"""The one parser of ``environment_file`` (``KEY=VALUE`` lines), used by every provider and ``hydro run``.

Strict on purpose: a line that is not ``KEY=VALUE`` or a value with an unbalanced quote is an
error naming the file and the line, never silently skipped or half-stripped (three lenient
parsers used to disagree on the same file). Accepted: blank lines, ``#`` comments, an optional
``export`` prefix, values in matching single or double quotes (the quotes are removed, nothing
inside is interpreted), and unquoted values (surrounding blanks stripped).
"""

from __future__ import annotations

import re
from pathlib import Path

from hydro_serving.errors import ConfigError

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env_text(text: str, where: str, field: str = "environment_file") -> dict[str, str]:
    """The variables of ``text``; ``where`` names the file in errors (``FILE line N: ...``)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not KEY.match(key):
            raise ConfigError(f"{where} line {number}: expected KEY=VALUE with KEY a variable name "
                              f"([A-Za-z_][A-Za-z0-9_]*), got {raw.strip()[:80]!r}", field=field)
        values[key] = _unquote(value, where, number, field)
    return values


def _unquote(value: str, where: str, number: int, field: str) -> str:
    if not value or value[0] not in "\"'":
        if value[-1:] in ("'", '"'):
            raise ConfigError(f"{where} line {number}: the value ends with a quote it does not open",
                              field=field)
        return value
    if len(value) < 2 or value[-1] != value[0]:
        raise ConfigError(f"{where} line {number}: unbalanced {value[0]} quote in the value", field=field)
    return value[1:-1]


def read_env_file(path: str | Path, field: str = "environment_file") -> dict[str, str]:
    """Parse one environment file; a missing or unreadable file is a :class:`ConfigError` too."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"environment file {path}: {exc.strerror or exc}", field=field) from None
    except UnicodeDecodeError:
        raise ConfigError(f"environment file {path} is not UTF-8 text", field=field) from None
    return parse_env_text(text, f"environment file {path}", field)
