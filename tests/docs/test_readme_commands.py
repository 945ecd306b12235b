"""Every ``hydro`` command the README shows exists, with the options it is shown with (in process).

The runnable blocks are run by test_readme.py; the rest of the README (synopses such as
``hydro gateway [--port 8080]``, commands in the prose) cannot run here, but each of them must
at least name a real command and real options, so a renamed or removed flag cannot stay
documented. Commands are resolved through the CLI's own click tree.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from hydro_serving.cli.main import LazyGroup, cli

REPO = Path(__file__).resolve().parents[2]
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
SPLIT = re.compile(r"\s*(?:\||;|&&|\$\(|\)|<|>)\s*")
FLAG = re.compile(r"^(--?[A-Za-z][A-Za-z0-9-]*)")


def _segments(text: str) -> list[str]:
    """Each ``hydro ...`` command in code (shell blocks and inline), one per shell command, comments dropped."""
    codes = [body for lang, body in FENCED.findall(text) if lang in ("bash", "sh")]
    prose = FENCED.sub("", text)
    codes += [" ".join(inline.split()) for inline in INLINE.findall(prose)]  # inline code may wrap lines
    found = []
    for code in codes:
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in SPLIT.split(line):
                part = part.strip().removeprefix("KEY=").strip()
                if part.startswith("hydro "):
                    found.append(part)
    return found


def _resolve(words: list[str]) -> tuple[click.Command, list[str], str]:
    """The command the words name, the words after it, and its path (``hydro model upload``)."""
    command: click.Command = cli
    path = ["hydro"]
    rest = words[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        ctx = click.Context(cli)
        sub = (LazyGroup.get_command(command, ctx, rest[0]) if command is cli  # type: ignore[arg-type]
               else command.get_command(ctx, rest[0]))
        if sub is None:
            break
        command, path, rest = sub, [*path, rest[0]], rest[1:]
    return command, rest, " ".join(path)


def _options(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def problems(text: str) -> list[str]:
    out = []
    for segment in _segments(text):
        try:
            words = shlex.split(segment)
        except ValueError:
            words = segment.split()
        command, rest, path = _resolve(words)
        if isinstance(command, click.Group) and rest and not rest[0].startswith(("-", "[", "<")) \
                and rest[0].isidentifier() and rest[0].islower() and command is not cli:
            out.append(f"{segment!r}: {path} has no subcommand {rest[0]!r}")
            continue
        if command is cli and len(words) > 1 and not words[1].startswith("-"):
            out.append(f"{segment!r}: hydro has no command {words[1]!r}")
            continue
        known = _options(command)
        for word in rest:
            match = FLAG.match(word.lstrip("[").strip())
            if match and match.group(1) not in known:
                out.append(f"{segment!r}: {path} has no option {match.group(1)}")
    return out


def test_every_hydro_command_in_the_readme_exists_with_its_options() -> None:
    text = (REPO / "README.md").read_text()
    assert len(_segments(text)) > 50  # the README is parsed, not skipped
    assert problems(text) == []


def test_the_check_can_fail() -> None:
    assert problems("`hydro model uplod x`") == ["'hydro model uplod x': hydro model has no subcommand 'uplod'"]
    assert problems("```bash\nhydro deploy -f stack.yml --flter x   # comment --nope\n```\n") == [
        "'hydro deploy -f stack.yml --flter x': hydro deploy has no option --flter"]
    assert problems("`hydro nope`") == ["'hydro nope': hydro has no command 'nope'"]
    assert problems("`hydro list | hydro describe NAME [--json]`") == [
        "'hydro describe NAME [--json]': hydro describe has no option --json"]


@pytest.mark.parametrize("segment", ["hydro invoke NAME -d @file.json", "hydro down --state DIR",
                                     "hydro build --yaml stack.yml", "hydro run churn --workers 2"])
def test_commands_of_this_issue_are_known(segment: str) -> None:
    assert problems(f"`{segment}`") == []
