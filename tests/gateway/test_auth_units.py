"""The pure parts of authentication, in-process: header parsing, key format and hashing, URL binding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydro_serving.cli.credentials import Target, normalize, resolve_target, token_for
from hydro_serving.errors import BadRequest, Forbidden, Unauthorized, ValidationError
from hydro_serving.gateway.auth import load_or_create, presented, record_url
from hydro_serving.gateway.keys import KeyRing, parse_expires
from hydro_serving.gateway.state import StateStore


@pytest.mark.parametrize("values, error", [
    (["Bearer a", "Bearer b"], BadRequest),
    (["Bearer \udcff"], BadRequest),  # how aiohttp hands over a non-UTF-8 byte
    (["Bearer é"], BadRequest),
    (["Bearer a\tb"], BadRequest),
    (["Bearer " + "x" * 5000], BadRequest),
    (["Token abc"], Unauthorized),
    (["Bearer"], Unauthorized),
    ([""], Unauthorized),
])
def test_malformed_authorization_is_refused_by_shape(values: list[str], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        presented(values)
    if error is BadRequest:
        assert info.value.field == "Authorization"  # type: ignore[attr-defined]


def test_well_formed_authorization() -> None:
    assert presented([]) is None
    got = presented(["bEaReR   tok "])
    assert got is not None and (got.scheme, got.value) == ("bearer", "tok")


def test_admin_credentials_match_only_themselves(tmp_path: Path) -> None:
    creds = load_or_create(tmp_path)
    assert creds.matches(presented([f"Bearer {creds.token}"]))
    assert not creds.matches(presented([f"Bearer {creds.token}x"]))
    assert not creds.matches(presented(["Basic !!!"]))  # not base64: not ours, no exception
    import base64

    basic = base64.b64encode(f"admin:{creds.password}".encode()).decode()
    assert creds.matches(presented([f"Basic {basic}"]))


def test_key_ring_scopes_and_survives_a_reload(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    ring = KeyRing(state)
    key, token = ring.create("ci", ["a", "b", "a"])
    assert key.functions == ("a", "b") and token.startswith(f"hk_{key.id}_")
    assert ring.authenticate(token, "a") == key
    with pytest.raises(Forbidden):
        ring.authenticate(token, "c")
    with pytest.raises(Unauthorized):
        ring.authenticate(token[:-1] + ("x" if token[-1] != "x" else "y"), "a")
    reloaded = KeyRing(StateStore(tmp_path))
    assert reloaded.authenticate(token, "b").name == "ci"
    ring.revoke("ci")
    with pytest.raises(Unauthorized, match="revoked"):
        ring.authenticate(token, "a")
    state.close()


@pytest.mark.parametrize("value, seconds", [("30d", 30 * 86400), ("12h", 43200), ("15m", 900), ("2w", 1209600),
                                            ("45s", 45), (60, 60), ("90", 90), (None, None)])
def test_expiry_durations(value: object, seconds: float | None) -> None:
    assert parse_expires(value) == seconds


@pytest.mark.parametrize("value", ["0d", "-1d", "1y", "soon", 1.5, True, [], ""])
def test_bad_expiry_names_the_field(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_expires(value)
    assert info.value.field == "expires"


def test_urls_are_compared_normalised() -> None:
    assert normalize("HTTP://Gateway.Example/") == "http://gateway.example:80"
    assert normalize("https://g.example:443") == normalize("https://g.example")
    assert normalize("http://127.0.0.1:8080") == normalize("http://localhost:8080/")
    assert normalize("http://127.0.0.2:8080") != normalize("http://localhost:8080")
    assert normalize("http://[::1]:8080/") == "http://[::1]:8080"


def test_token_for_never_crosses_gateways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    creds = load_or_create(state)
    record_url(state, "http://127.0.0.1:9000")
    assert json.loads((state / "credentials.json").read_text())["url"] == "http://127.0.0.1:9000"
    assert token_for(Target("http://127.0.0.1:9000/", "--gateway"), state) == creds.token
    assert token_for(Target("http://127.0.0.1:9001", "--gateway"), state) is None
    monkeypatch.setenv("HYDRO_TOKEN", "env-token")
    monkeypatch.setenv("HYDRO_GATEWAY", "http://gw.example")
    assert token_for(Target("http://gw.example", "HYDRO_GATEWAY"), state) == "env-token"
    assert token_for(Target("http://evil.example", "provider.gateway"), state) is None
    assert token_for(Target("http://evil.example", "--gateway"), state) is None
    monkeypatch.delenv("HYDRO_GATEWAY")
    assert token_for(Target("http://evil.example", "--gateway"), state) == "env-token"  # the user named it
    assert token_for(Target("http://evil.example", "provider.gateway"), state) is None  # a stack file did
    assert resolve_target(None).source == "default"


def test_auth_in_stack_yml_is_key_or_absent() -> None:
    from hydro_serving.errors import StackError
    from hydro_serving.stack import FunctionSpec

    assert FunctionSpec.from_dict({"name": "f", "lang": "python3", "auth": "key"}).auth == "key"
    assert FunctionSpec.from_dict({"name": "f", "lang": "python3"}).to_dict().get("auth") is None
    with pytest.raises(StackError) as info:
        FunctionSpec.from_dict({"name": "f", "lang": "python3", "auth": "none"})
    assert info.value.field == "auth"
