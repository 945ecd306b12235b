"""`hydro model` end to end through the real entry point: output, and one-line errors with exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.store.conftest import run_cli

SIG = "inputs:\n  - {name: x, dtype: float64, shape: [-1, 4]}\noutputs:\n  - {name: y, dtype: int64, shape: [-1]}\n"


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("backend", ["dir", "moto"])
def test_cli_workflow(backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                      tmp_path: Path, iris_model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if backend == "moto":
        for key, value in request.getfixturevalue("moto_s3").items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()  # moto's start-up banner
        store = ["--store", "s3://cli-workflow"]
    else:
        store = ["--store", f"file://{tmp_path / 'store'}"]
    sig = tmp_path / "sig.yml"
    sig.write_text(SIG)
    train = tmp_path / "train.csv"
    train.write_text("sepal,species\n5.1,setosa\n4.9,setosa\n6.3,virginica\n")

    code, out, err = run_cli(["model", *store, "upload", str(iris_model_file), "--name", "iris", "--signature",
                              str(sig), "--training-data", str(train), "--meta", "owner=ds", "--meta", "run=7"],
                             capsys)
    assert (code, out.strip()) == (0, "iris:1"), err
    # no progress bar when stderr is not a terminal; one note that pickle is code and how to sign it
    assert err.count("\n") == 1 and "pickle" in err and "hydro model sign" in err
    assert run_cli(["model", *store, "upload", str(iris_model_file), "--name", "iris"], capsys)[1].strip() == "iris:2"
    assert run_cli(["model", *store, "list"], capsys)[1].split() == ["iris"]
    code, out, _ = run_cli(["model", *store, "alias", "iris:1", "production"], capsys)
    assert code == 0 and "iris:production -> iris:1" in out
    code, out, _ = run_cli(["model", *store, "versions", "iris"], capsys)
    lines = out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["iris:1", "iris:2"]
    assert lines[0].endswith("production") and lines[1].endswith("latest")

    code, out, _ = run_cli(["model", *store, "show", "iris:production", "--json"], capsys)
    manifest = json.loads(out)
    assert manifest["version"] == 1 and manifest["framework"] == "sklearn"
    assert {k: v for k, v in manifest["metadata"].items() if not k.startswith("hydro.")} == {"owner": "ds", "run": "7"}
    assert manifest["metadata"]["hydro.model_inputs"]["width"] == 4  # what the model declares (issue 14)
    assert manifest["signature"]["inputs"][0]["shape"] == [-1, 4]
    sepal = manifest["training_profile"]["columns"][0]
    assert sepal["type"] == "float" and sepal["min"] == 4.9 and sepal["max"] == 6.3
    code, out, _ = run_cli(["model", *store, "show", "iris"], capsys)
    assert "model:      iris:2" in out and "sha256:" in out

    code, out, _ = run_cli(["model", *store, "pull", "iris:production", str(tmp_path / "out")], capsys)
    assert code == 0
    assert (tmp_path / "out" / iris_model_file.name).read_bytes() == iris_model_file.read_bytes()
    monkeypatch.setenv("HYDRO_GATEWAY", "http://127.0.0.1:9")  # nothing listens: pins cannot be asked
    code, out, err = run_cli(["model", *store, "rm", "iris:2"], capsys)
    assert (code, out.strip()) == (0, "removed iris:2")
    assert "pins of deployed functions were not checked" in err
    assert run_cli(["model", *store, "discover"], capsys)[1].strip() == "nothing to discover"


def test_cli_errors_are_one_line(tmp_path: Path, iris_model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["model", "--store", f"file://{tmp_path / 'store'}"]
    assert run_cli([*store, "upload", str(iris_model_file), "--name", "ok"], capsys)[0] == 0
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("inputs: [ {name: x\n")
    bad_dtype = tmp_path / "dtype.yml"
    bad_dtype.write_text("inputs:\n  - {name: x, dtype: float99}\n")
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"\x00\x01\x02PK")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    unknown = tmp_path / "blob.bin"
    unknown.write_bytes(b"what is this")

    cases = [
        ([*store, "upload", str(iris_model_file), "--name", "Bad Name"], "invalid model name"),
        ([*store, "upload", str(tmp_path / "missing.joblib"), "--name", "x"], "does not exist"),
        ([*store, "upload", str(unknown), "--name", "x"], "cannot tell the framework"),
        ([*store, "upload", str(iris_model_file), "--name", "x", "--signature", str(bad_yaml)], "not valid YAML"),
        ([*store, "upload", str(iris_model_file), "--name", "x", "--signature", str(bad_dtype)], "float99"),
        ([*store, "upload", str(iris_model_file), "--name", "x", "--training-data", str(binary)], "not a CSV"),
        ([*store, "upload", str(iris_model_file), "--name", "x", "--training-data", str(ragged)], "line 3"),
        ([*store, "upload", str(iris_model_file), "--name", "x", "--meta", "novalue"], "key=value"),
        ([*store, "show", "nope"], "unknown model 'nope'"),
        ([*store, "show", "ok:7"], "no version 7"),
        ([*store, "show", "ok:canary"], "no alias 'canary'"),
        ([*store, "pull", "ok:3", str(tmp_path / "d")], "no version 3"),
        ([*store, "alias", "ok", "production"], "must name a version"),
        ([*store, "alias", "ok:1", "latest"], "implicit"),
        ([*store, "rm", "ok:9"], "no version 9"),
        ([*store, "versions", "ghost"], "unknown model 'ghost'"),
        (["model", "--store", "ftp://host/x", "list"], "unsupported store URL"),
    ]
    for args, needle in cases:
        code, _out, err = run_cli(args, capsys)
        _one_line_error(code, err, needle)
    assert run_cli([*store, "list"], capsys)[1].split() == ["ok"]  # none of the failures left a version


def test_cli_s3_errors(moto_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, iris_model_file: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in moto_s3.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()  # moto's start-up banner
    # the server refuses to create a bucket with a 2-character name: the bucket is missing and cannot be created
    code, _out, err = run_cli(["model", "--store", "s3://ab", "upload", str(iris_model_file),
                               "--name", "x"], capsys)
    _one_line_error(code, err, "bucket 'ab' does not exist", "could not be created")

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    code, _out, err = run_cli(["model", "--store", "s3://somewhere", "upload", str(iris_model_file),
                               "--name", "x"], capsys)
    _one_line_error(code, err, "cannot reach the S3 endpoint")

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    code, _out, err = run_cli(["model", "--store", "s3://somewhere", "list"], capsys)
    _one_line_error(code, err, "no-such-profile")


@pytest.mark.s3
def test_cli_wrong_credentials(rgw_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, iris_model_file: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """moto accepts any key, so wrong credentials are checked against the real RGW."""
    for key, value in rgw_s3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    code, _out, err = run_cli(["model", "--store", "s3://creds-check", "upload", str(iris_model_file),
                               "--name", "x"], capsys)
    _one_line_error(code, err, "refused", "AWS_SECRET_ACCESS_KEY")
    code, _out, err = run_cli(["model", "--store", "s3://creds-check", "list"], capsys)
    _one_line_error(code, err, "refused")


def test_real_process_prints_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed entry point in a real process: unreachable endpoint -> one line, exit 1."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    proc = subprocess.run([sys.executable, "-m", "hydro_serving", "model", "--store", "s3://gone", "versions", "m"],
                          capture_output=True, text=True, timeout=60, check=False)
    _one_line_error(proc.returncode, proc.stderr, "cannot reach the S3 endpoint")
