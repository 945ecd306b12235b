"""Issue 14 point 15 and 16, in process: everyday CLI behaviour and its error text.

``hydro`` runs through :func:`hydro_serving.cli.main.main` (the real entry point, with its error
printing), on real files in a temporary folder; nothing is mocked. The tests that need a gateway
or a server process are in test_processes.py.
"""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path

import click
import pytest

from hydro_serving.cli.main import COMMANDS, LazyGroup, cli, main
from hydro_serving.errors import ValidationError


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``hydro ARGV`` in this process: (exit status, stdout, stderr)."""
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- 15: hydro invoke -d @file ------------------------------------------------------------------------


def test_invoke_data_at_file_reads_the_file_as_curl_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydro_serving.cli.functions import request_body

    payload = tmp_path / "payload.json"
    payload.write_bytes(b'{"inputs": [1, 2]}\n')
    assert request_body(f"@{payload}") == b'{"inputs": [1, 2]}\n'
    assert request_body('{"a": 1}') == b'{"a": 1}'
    assert request_body(None, "@literal") == b"@literal"  # --data-raw keeps a leading @ as text
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"from": "stdin"}')))
    assert request_body("@-") == b'{"from": "stdin"}'


def test_invoke_data_at_a_missing_file_is_an_error_naming_the_option(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Not a request carrying the text '@nope.json' to the function."""
    code, _out, err = run_cli(capsys, "invoke", "echo", "-d", f"@{tmp_path / 'nope.json'}",
                             "--gateway", "http://127.0.0.1:9")
    assert code == 2 and "-d/--data" in err and "nope.json" in err and "--data-raw" in err
    assert "no gateway answers" not in err  # refused before any request
    code, _out, err = run_cli(capsys, "invoke", "echo", "-d", "@", "--gateway", "http://127.0.0.1:9")
    assert code == 2 and "-d/--data" in err
    code, _out, err = run_cli(capsys, "invoke", "echo", "-d", "x", "--data-raw", "y",
                              "--gateway", "http://127.0.0.1:9")
    assert code == 2 and "not both" in err


# ---- 15: -f has one meaning ---------------------------------------------------------------------------


def _commands() -> list[click.Command]:
    group = LazyGroup()
    ctx = click.Context(cli)
    found: list[click.Command] = []
    todo = [group.get_command(ctx, name) for name in COMMANDS]
    while todo:
        command = todo.pop()
        if command is None:
            continue
        found.append(command)
        if isinstance(command, click.Group):
            todo.extend(command.commands.values())
    return found


def test_dash_f_is_the_stack_file_spelled_file_in_every_command() -> None:
    spellings = {}
    for command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and "-f" in param.opts:
                spellings[command.name] = sorted(param.opts)
    assert {"build", "new", "push", "deploy", "up", "run", "list"} <= set(spellings)
    assert {tuple(v) for v in spellings.values()} == {("--file", "-f")}, spellings


def test_the_old_yaml_spelling_still_works_with_a_deprecation_note(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "new", "f1", "--lang", "python3", "--yaml", "other.yml")
    assert code == 0, err
    assert "--yaml is deprecated" in err and "-f/--file" in err
    code, out, err = run_cli(capsys, "build", "--shrinkwrap", "--file", "other.yml")
    assert code == 0 and "wrote build/f1/" in out and "deprecated" not in err, err


# ---- 15: hydro new prints the next steps, for every template --------------------------------------------


def test_new_prints_next_steps_for_every_template(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from hydro_serving.templates import scan_templates

    monkeypatch.chdir(tmp_path)
    found, _ = scan_templates()
    kinds = {}
    for tpl in sorted(found, key=lambda t: t.kind == "router"):  # a router needs functions to chain
        name = f"fn-{tpl.name}".replace("_", "-")
        code, out, err = run_cli(capsys, "new", name, "--lang", tpl.name)
        assert code == 0, err
        steps = out.split("next steps:", 1)[1]
        kinds[tpl.kind] = steps
        assert f"hydro invoke {name}" in steps and "hydro up" in steps, (tpl.name, out)
        if tpl.kind == "model":
            model_line = next(line for line in out.splitlines() if line.strip().startswith("model:"))
            assert model_line.split(":", 1)[1].strip() in steps  # where to save the model
            assert "hydro model upload" in steps and f"hydro run {name}" in steps
        elif tpl.kind == "function":
            assert f"{name}/handler.py" in steps and (tmp_path / name / "handler.py").is_file()
        else:
            assert f"{name}.chain" in steps
    assert set(kinds) == {"model", "function", "router"}


# ---- 15: --training-data refuses what is not CSV --------------------------------------------------------

SIGNATURE_YAML = """\
# the signature, passed by mistake as training data
inputs:
  - name: alcohol
    dtype: float64
  - name: malic_acid
    dtype: float64
outputs:
  - name: cultivar
    dtype: int64
"""


def test_training_data_refuses_yaml_naming_the_flag(tmp_path: Path, iris_model_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from hydro_serving.store import open_store
    from hydro_serving.store.profile import profile_csv

    signature = tmp_path / "signature.yml"
    signature.write_text(SIGNATURE_YAML)
    with pytest.raises(ValidationError, match="looks like YAML"):
        profile_csv(signature)
    code, _out, err = run_cli(capsys, "model", "upload", str(iris_model_file), "--name", "iris",
                             "--training-data", str(signature))
    assert code == 1 and err.startswith("error: --training-data:") and "looks like YAML" in err, err
    assert "Traceback" not in err and "(training_data)" not in err
    assert "iris" not in open_store().list_models()  # nothing was uploaded
    listed = tmp_path / "list.yml"
    listed.write_text("---\n- 1\n- 2\n")
    with pytest.raises(ValidationError, match="looks like YAML"):
        profile_csv(listed)
    for bad, why in ((b'{"a": 1}', "JSON"), (b"\x00\x01binary", "binary")):
        (tmp_path / "bad.csv").write_bytes(bad)
        with pytest.raises(ValidationError, match=why):
            profile_csv(tmp_path / "bad.csv")


def test_training_data_csv_that_resembles_yaml_is_still_csv(tmp_path: Path) -> None:
    from hydro_serving.store.profile import profile_csv

    data = tmp_path / "train.csv"
    data.write_text("time: start,value\n2024,1.5\n2025,2.5\n")  # a colon in a header is no YAML
    assert profile_csv(data)["rows"] == 2
    single = tmp_path / "single.csv"
    single.write_text("value\n1\n2\n3\n")  # one column, no delimiter: CSV all the same
    assert profile_csv(single)["rows"] == 3


# ---- 15: the model cache is under XDG_CACHE_HOME --------------------------------------------------------


def test_cache_is_under_xdg_cache_home_and_the_old_one_is_moved(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from hydro_serving.store.cache import default_cache_dir

    for var in ("HYDRO_CACHE", "HYDRO_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    old = tmp_path / "xdg-data" / "hydro" / "cache"
    (old / "blobs").mkdir(parents=True)
    (old / "blobs" / "abc").write_bytes(b"model bytes")
    new = default_cache_dir()
    assert new == tmp_path / "xdg-cache" / "hydro" / "models"
    assert (new / "blobs" / "abc").read_bytes() == b"model bytes" and not old.exists()  # moved, not copied
    assert default_cache_dir() == new  # a second call finds it in place
    monkeypatch.setenv("HYDRO_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "cache"  # an explicit HYDRO_HOME keeps everything there
    monkeypatch.setenv("HYDRO_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"


# ---- 15: hydro run's workers are a replica's ------------------------------------------------------------


def test_run_defaults_to_the_workers_a_replica_runs() -> None:
    from hydro_serving.cli.run import replica_concurrency
    from hydro_serving.runtime.server import cpu_count, default_threads, default_workers
    from hydro_serving.templates import get_template

    for lang in ("sklearn", "python3", "router"):
        workers = default_workers(get_template(lang))
        assert replica_concurrency(lang, None, None) == (workers, default_threads(workers))
    assert replica_concurrency("sklearn", None, None)[0] == min(2, cpu_count())
    assert replica_concurrency("sklearn", 3, None) == (3, 4)
    assert replica_concurrency("python3", None, 2) == (1, 2)


# ---- 16: error text -------------------------------------------------------------------------------------

STACK_TYPO = """\
version: 1.0
provider:
  name: hydro
functions:
  f1:
    lang: python3
    scael:
      min: 1
"""


@pytest.mark.parametrize(("text", "expected"), [
    (STACK_TYPO, "error: functions.f1.scael: unknown key 'scael' (line 7)\n"),
    (": :\n", "error: stack.yml is not valid YAML: expected <block end>, but found ':' (line 1)\n"),
    ("- 1\n", "error: (top level): must be of type object, got list [1]\n"),
])
def test_stack_errors_have_no_redundant_suffix(text: str, expected: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stack.yml").write_text(text)
    code, _out, err = run_cli(capsys, "build", "--shrinkwrap")
    assert code == 1 and err == expected


def test_a_field_not_in_the_message_is_still_shown() -> None:
    from hydro_serving.cli.main import error_line
    from hydro_serving.errors import StackError

    assert error_line(ValidationError("must be a number", field="inputs[0]")) == "must be a number (inputs[0])"
    assert error_line(StackError("functions.f1.x: bad (line 3)", field="functions.f1.x")) == \
        "functions.f1.x: bad (line 3)"
    assert error_line(StackError("no stack file", field="(file)")) == "no stack file"


def test_invalid_duration_says_the_accepted_format(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stack.yml").write_text(STACK_TYPO.replace("scael:\n      min: 1", "scale:\n      idle: 5 minutes"))
    code, _out, err = run_cli(capsys, "build", "--shrinkwrap")
    assert code == 1 and 'functions.f1.scale.idle: has an invalid value "5 minutes"' in err
    assert "30s" in err and "5m" in err and err.rstrip().endswith("(line 8)"), err
    (tmp_path / "stack.yml").write_text(STACK_TYPO.replace("scael:\n      min: 1", "limits:\n      body: lots"))
    code, _out, err = run_cli(capsys, "build", "--shrinkwrap")
    assert code == 1 and "10Mi" in err, err


def test_missing_docker_package_says_it_is_the_python_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydro_serving.errors import MissingExtra, require_extra

    monkeypatch.setitem(sys.modules, "docker", None)  # what an environment without the extra looks like
    with pytest.raises(MissingExtra) as caught:
        require_extra("docker", "docker")
    assert "Python package 'docker'" in caught.value.message
    assert "pip install 'hydro-serving[docker]'" in caught.value.message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("host", "reason"), [
    ("tcp://127.0.0.1:{port}", "Connection refused"),
    ("unix://{tmp}/no-engine.sock", "No such file or directory"),
])
def test_docker_host_pointing_nowhere_gives_a_whole_message(host: str, reason: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """It was cut at 200 characters, mid-sentence, inside the SDK's urllib3 text."""
    from hydro_serving.builder.images import EngineUnavailable, connect

    value = host.format(port=_closed_port(), tmp=tmp_path)
    monkeypatch.setenv("DOCKER_HOST", value)
    with pytest.raises(EngineUnavailable) as caught:
        connect(timeout=5)
    assert caught.value.message == f"no Docker engine found (DOCKER_HOST={value}): {reason}"


def test_no_gateway_hint_names_the_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    code, _out, err = run_cli(capsys, "invoke", "echo", "-d", "{}", "--gateway", f"http://127.0.0.1:{port}")
    assert code == 1 and f"start one with 'hydro gateway --port {port}' or 'hydro up'" in err, err
    from hydro_serving.gateway.client import start_hint

    assert start_hint("http://127.0.0.1:8080") == "start one with 'hydro gateway' or 'hydro up'"
    assert "--port" not in start_hint("http://gw.example:9000") and "gw.example" in start_hint("http://gw.example:9000")
