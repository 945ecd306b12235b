"""Signed manifests, trusted keys and pins, checked against every store backend.

The attacker can write anything into the store but does not hold the signing key.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hydro_serving.errors import ConfigError, UntrustedModelError
from hydro_serving.store import ModelStore, Pin, SigningKey, TrustPolicy, fetch_model
from hydro_serving.store.trust import generate_keys, parse_trusted_keys, trusted_keys_from_env

from .conftest import run_cli


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate_keys(tmp_path / "keys")
    return private, public


def test_keys_generate_writes_a_private_key_only_the_owner_reads(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["keys", "generate", "--out", str(tmp_path / "k")], capsys)
    assert code == 0, err
    private, public = tmp_path / "k" / "hydro-signing.key", tmp_path / "k" / "hydro-signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("ed25519:")
    assert f"HYDRO_TRUSTED_KEYS={public.read_text().strip()}" in out
    code, _, err = run_cli(["keys", "generate", "--out", str(tmp_path / "k")], capsys)
    assert code == 1 and "already exists" in err  # never overwrites a key
    key = SigningKey.load(private)
    assert list(parse_trusted_keys([str(public)])) == [key.key_id]
    assert list(parse_trusted_keys([public.read_text()])) == [key.key_id]  # inline form


@pytest.mark.parametrize("entry", ["ed25519:not-base64!", "ed25519:AAAA", "/nonexistent/key.pub"])
def test_a_bad_trusted_key_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match="HYDRO_TRUSTED_KEYS"):
        trusted_keys_from_env({"HYDRO_TRUSTED_KEYS": entry})


def test_signed_upload_loads_and_everything_else_is_refused(store: ModelStore, store_url: str, tmp_path: Path,
                                                            iris_model_file: Path, keypair: tuple[Path, Path],
                                                            put_foreign: Callable[[str, bytes], None]) -> None:
    private, public = keypair
    key = SigningKey.load(private)
    other_private, _, _ = generate_keys(tmp_path / "other")
    trust = TrustPolicy(trusted=parse_trusted_keys([str(public)]))

    signed = store.upload(iris_model_file, "m", sign_key=key)  # m:1
    unsigned = store.upload(iris_model_file, "m")  # m:2
    foreign = store.upload(iris_model_file, "m", sign_key=SigningKey.load(other_private))  # m:3
    cache = tmp_path / "cache"

    assert fetch_model("m:1", store_url, cache, policy=trust).joinpath("model.joblib").is_file()
    with pytest.raises(UntrustedModelError, match="not signed"):
        fetch_model("m:2", store_url, cache, policy=trust)
    with pytest.raises(UntrustedModelError, match="not among the trusted keys"):
        fetch_model("m:3", store_url, cache, policy=trust)
    with pytest.raises(UntrustedModelError, match=r"m:3 is signed by key .* not among the trusted keys"):
        fetch_model("m", store_url, cache, policy=trust)  # latest is m:3
    assert sorted(p.name for p in cache.glob("models/*/m/*")) == ["1", "1.state.json"]  # nothing else fetched
    assert (unsigned.version, foreign.version) == (2, 3)

    # signing an existing version makes it loadable (hydro model sign)
    store.sign("m:2", key)
    assert fetch_model("m:2", store_url, cache, policy=trust).is_dir()

    # the manifest changed after signing (one byte of metadata): the signature no longer matches
    raw = dict(signed.to_dict())
    raw["metadata"] = {"owner": "mallory"}
    put_foreign("models/m/1/manifest.json", json.dumps(raw).encode())
    with pytest.raises(UntrustedModelError, match="does not match"):
        store.trusted_manifest("m:1", trust)
    # the cache re-checks what it recorded, but a changed store is asked again: refused too
    with pytest.raises(UntrustedModelError):
        fetch_model("m:1", store_url, tmp_path / "fresh-cache", policy=trust)


def test_latest_of_a_trusted_store_refuses_an_unsigned_newest(store: ModelStore, store_url: str, tmp_path: Path,
                                                              iris_model_file: Path,
                                                              keypair: tuple[Path, Path]) -> None:
    private, public = keypair
    store.upload(iris_model_file, "m", sign_key=SigningKey.load(private))
    store.upload(iris_model_file, "m")  # someone with store access, without the key
    trust = TrustPolicy(trusted=parse_trusted_keys([str(public)]))
    with pytest.raises(UntrustedModelError, match="m:2 is not signed"):
        fetch_model("m", store_url, tmp_path / "cache", policy=trust)


def test_a_pin_loads_exactly_the_pinned_bytes(store: ModelStore, store_url: str, tmp_path: Path,
                                              iris_model_file: Path,
                                              put_foreign: Callable[[str, bytes], None]) -> None:
    first = store.upload(iris_model_file, "m")
    store.set_alias("m", 1, "production")
    pin = Pin.of(first)
    assert Pin.parse(str(pin)) == pin and str(pin).startswith("m:1@sha256:")
    store.upload(iris_model_file, "m")
    store.set_alias("m", 2, "production")  # the alias moved after the deploy: the pin still says m:1
    tree = fetch_model("m:production", store_url, tmp_path / "cache", policy=TrustPolicy(pin=pin))
    assert tree.name == "1"

    # the version is changed in the store after the deploy (file and manifest rewritten consistently)
    changed = bytearray(iris_model_file.read_bytes())
    changed[-1] ^= 1
    import hashlib

    raw = first.to_dict()
    raw["files"][0].update(size=len(changed), sha256=hashlib.sha256(changed).hexdigest())
    put_foreign("models/m/1/model.joblib", bytes(changed))
    put_foreign("models/m/1/manifest.json", json.dumps(raw).encode())
    with pytest.raises(UntrustedModelError, match="not the one the deploy pinned"):
        fetch_model("m:1", store_url, tmp_path / "other-cache", policy=TrustPolicy(pin=pin))
    with pytest.raises(UntrustedModelError, match="pinned"):
        fetch_model("other", store_url, tmp_path / "other-cache", policy=TrustPolicy(pin=pin))
    with pytest.raises(ConfigError, match="HYDRO_MODEL_PIN"):
        TrustPolicy.from_env({"HYDRO_MODEL_PIN": "m:1@sha256:../../x"})


def test_cli_sign_and_upload_sign(tmp_path: Path, iris_model_file: Path, keypair: tuple[Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keypair
    store = ["model", "--store", f"file://{tmp_path / 'store'}"]
    code, out, err = run_cli([*store, "upload", str(iris_model_file), "--name", "m", "--sign", str(private)],
                             capsys)
    assert (code, out.strip()) == (0, "m:1"), err
    assert "signed with your key" in err
    assert run_cli([*store, "upload", str(iris_model_file), "--name", "m"], capsys)[0] == 0
    code, out, err = run_cli([*store, "sign", "m:2", "--key", str(private)], capsys)
    assert code == 0 and "signed m:2 with key" in out, err
    code, _, err = run_cli([*store, "sign", "m:2", "--key", str(public)], capsys)
    assert code == 1 and "not an unencrypted PEM private key" in err
    key_id = SigningKey.load(private).key_id
    assert f"signed by:  key {key_id}" in run_cli([*store, "show", "m:2"], capsys)[1]
    assert run_cli([*store, "upload", str(iris_model_file), "--name", "m"], capsys)[0] == 0
    assert "signed by:  unsigned" in run_cli([*store, "show", "m:3"], capsys)[1]


def test_a_discovered_pickle_is_refused_unless_a_deploy_pinned_it(store: ModelStore, store_url: str,
                                                                  tmp_path: Path, iris_model_file: Path,
                                                                  put_foreign: Callable[[str, bytes], None]) -> None:
    put_foreign("models/dropped/model.joblib", iris_model_file.read_bytes())
    manifest = store.discover(allow_unsafe=True).added[0]  # an operator opted in on some gateway
    with pytest.raises(UntrustedModelError, match="created by discovery"):
        fetch_model("dropped:1", store_url, tmp_path / "cache", policy=TrustPolicy.from_env({}))
    pinned = TrustPolicy.from_env({"HYDRO_MODEL_PIN": str(Pin.of(manifest))})  # the gateway vetted it at deploy
    assert fetch_model("dropped", store_url, tmp_path / "cache", policy=pinned).name == "1"


def test_stack_provider_trusted_keys(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    from hydro_serving.errors import StackError
    from hydro_serving.stack import load_stack

    _, public = keypair
    (tmp_path / "keys.pub").write_bytes(public.read_bytes())
    stack = tmp_path / "stack.yml"
    stack.write_text("provider:\n  name: hydro\n  trusted_keys: [keys.pub, " + public.read_text().strip() + "]\n"
                     "functions:\n  f:\n    lang: python3\n    handler: ./f\n")
    keys = load_stack(stack).provider.trusted_keys
    assert keys[0] == str(tmp_path / "keys.pub") and keys[1].startswith("ed25519:")
    assert len(parse_trusted_keys(keys)) == 1  # the same key twice
    stack.write_text("provider:\n  name: hydro\n  trusted_keys: keys.pub\nfunctions:\n  f:\n    lang: python3\n")
    with pytest.raises(StackError, match="trusted_keys"):
        load_stack(stack)
