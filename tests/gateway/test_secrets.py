"""Secrets on the local provider: declared ones are 0600 files in $HYDRO_SECRETS_DIR, nothing else is."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from hydro_serving.cli.functions import secret
from hydro_serving.gateway.secrets import write_secret

SECRETS_HANDLER = '''
import os
import stat


def handle(payload, context):
    folder = os.environ["HYDRO_SECRETS_DIR"]
    files = sorted(os.listdir(folder))
    return {"files": files,
            "values": {f: open(os.path.join(folder, f)).read() for f in files},
            "modes": {f: stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode) for f in files}}
'''


def test_declared_secrets_are_private_files_of_the_replica(gateway: Any, tmp_path: Path) -> None:
    write_secret(gateway.state_dir, "api-key", b"s3cr3t")
    write_secret(gateway.state_dir, "other-fn-key", b"not yours")
    folder = gateway.write_handler(tmp_path / "sec", SECRETS_HANDLER)
    gateway.deploy(gateway.python_spec("sec", folder, secrets=["api-key"]))
    status, _, body = gateway.invoke("sec", {})
    assert status == 200, body
    assert body["files"] == ["api-key"]  # only what it declared
    assert body["values"] == {"api-key": "s3cr3t"}
    assert body["modes"] == {"api-key": 0o600}
    assert gateway.status("sec")["secrets"] == ["api-key"]


def test_missing_or_malformed_secret_refuses_the_deploy(shared_gateway: Any, tmp_path: Path) -> None:
    gw = shared_gateway
    write_secret(gw.state_dir, "present", b"x")
    folder = gw.write_handler(tmp_path / "sec", SECRETS_HANDLER)
    for secrets, field in ((["present", "absent"], "hydro.secrets[1]"), (["../credentials.json"], "hydro.secrets[0]")):
        body = {"service": "sec", "hydro": gw.python_spec("sec", folder, secrets=secrets)}
        status, out = gw.admin("POST", "/system/functions", body)
        assert status == 400, out
        assert out["field"] == field
    assert gw.admin("GET", "/system/function/sec")[0] == 404


def test_hydro_secret_create_list_remove(tmp_path: Path) -> None:
    state = tmp_path / "state"
    value = tmp_path / "value.bin"
    value.write_bytes(b"\x00binary\n")
    runner = CliRunner()
    out = runner.invoke(secret, ["create", "lit", "--from-literal", "abc", "--state", str(state)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(secret, ["create", "bin", "--from-file", str(value), "--state", str(state)])
    assert out.exit_code == 0, out.output
    assert (state / "secrets" / "lit").read_bytes() == b"abc"
    assert (state / "secrets" / "bin").read_bytes() == b"\x00binary\n"
    assert stat.S_IMODE((state / "secrets" / "bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    out = runner.invoke(secret, ["list", "--state", str(state)])
    assert out.output.split() == ["bin", "lit"]
    assert runner.invoke(secret, ["remove", "lit", "--state", str(state)]).exit_code == 0
    assert not (state / "secrets" / "lit").exists()
    # exactly one source; a name that could be a path is refused
    assert runner.invoke(secret, ["create", "x", "--state", str(state)]).exit_code == 2
    out = runner.invoke(secret, ["create", "../x", "--from-literal", "v", "--state", str(state)])
    assert out.exit_code != 0 and not (tmp_path / "x").exists()
