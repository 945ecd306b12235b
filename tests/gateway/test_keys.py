"""Per-function API keys and router keys against real gateway processes and real replicas.

Written as an attacker would act: anonymous callers, keys for other functions, expired and
revoked keys, key-shaped garbage, malformed Authorization headers, and functions that dump every
header and variable they receive, looking for the gateway's credentials.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

STAGE = '''
import os
import time

time.sleep(float(os.environ.get("LOAD_SLEEP", "0")))  # a model-sized load, so the router's prewarm matters
NAME = os.environ["STAGE_NAME"]


def handle(payload, context):
    """Append this stage to the trail, with every header and variable it was given (the attacker's view)."""
    data = payload if isinstance(payload, dict) else {}
    seen = {"headers": {k.lower(): v for k, v in context.headers.items()}, "env": dict(os.environ)}
    return {"trail": [*data.get("trail", []), NAME], "seen": {**data.get("seen", {}), NAME: seen}}
'''


def stage(gw: Any, folder: Path, name: str, load_sleep: float = 0.0, **kw: Any) -> dict[str, Any]:
    return gw.python_spec(name, folder, environment={"STAGE_NAME": name, "LOAD_SLEEP": str(load_sleep)}, **kw)


def router(name: str, chain: list[Any], **kw: Any) -> dict[str, Any]:
    return {"name": name, "lang": "router", "chain": chain, "scale": {"min": 0, "max": 1, "idle": 300}, **kw}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_key(gw: Any, name: str, functions: list[str], expires: Any = None) -> str:
    body: dict[str, Any] = {"name": name, "functions": functions}
    if expires is not None:
        body["expires"] = expires
    status, out = gw.admin("POST", "/system/keys", body)
    assert status == 201, out
    assert out["key"].startswith("hk_") and out["functions"] == functions and out["status"] == "active"
    return out["key"]


def raw_request(gw: Any, path: str, headers: list[tuple[str, str | bytes]]) -> tuple[int, str, bytes]:
    """One request with headers exactly as given (duplicates, raw bytes): what urllib refuses to send."""
    url = urlsplit(gw.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        body = b"{}"
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


@pytest.fixture
def stage_dir(tmp_path: Path) -> Path:
    from tests.gateway_fixtures import write_handler

    return write_handler(tmp_path / "stage", STAGE)


def test_keys_are_scoped_expire_and_revoke(gateway_factory: Any, stage_dir: Path) -> None:
    gw = gateway_factory("--auth-functions")
    gw.deploy(stage(gw, stage_dir, "a"))
    gw.deploy(stage(gw, stage_dir, "b"))
    key_a = create_key(gw, "caller-a", ["a"])

    status, _, body = gw.invoke("a", {})
    assert status == 401 and body["code"] == "unauthorized" and body["function"] == "a", body
    assert "key" in body["error"]
    status, _, body = gw.invoke("a", {}, headers=bearer(key_a))
    assert status == 200 and body["trail"] == ["a"], body
    assert "authorization" not in body["seen"]["a"]["headers"]  # the key stops at the gateway
    status, _, body = gw.invoke("b", {}, headers=bearer(key_a))
    assert status == 403 and body["code"] == "forbidden" and body["function"] == "b", body
    assert "caller-a" in body["error"] and "'b'" in body["error"]
    status, _, body = gw.invoke("a", {}, headers=bearer(gw.token))  # the admin token works everywhere
    assert status == 200, body
    status, _, body = gw.invoke("nope", {})  # no credentials: 401 before saying what exists
    assert status == 401, body

    # an expired key: refused with 401 saying so
    short = create_key(gw, "short", ["a"], expires=1)
    assert gw.invoke("a", {}, headers=bearer(short))[0] == 200
    time.sleep(1.2)
    status, _, body = gw.invoke("a", {}, headers=bearer(short))
    assert status == 401 and "expired" in body["error"] and "short" in body["error"], body

    # a revoked key: 401 saying so, from the next request on; the name can then be reused for a new key
    status, out = gw.admin("DELETE", "/system/keys/caller-a")
    assert status == 200 and out["status"] == "revoked", out
    status, _, body = gw.invoke("a", {}, headers=bearer(key_a))
    assert status == 401 and "revoked" in body["error"], body
    fresh = create_key(gw, "caller-a", ["a", "b"])
    assert gw.invoke("b", {}, headers=bearer(fresh))[0] == 200
    assert gw.invoke("a", {}, headers=bearer(key_a))[0] == 401  # the old one stays dead

    # keys survive a restart of the gateway (they are in gateway.db), revocations too
    gw.restart()
    assert gw.invoke("b", {}, headers=bearer(fresh))[0] == 200
    assert gw.invoke("a", {}, headers=bearer(key_a))[0] == 401

    status, keys = gw.admin("GET", "/system/keys")
    assert status == 200
    by_name = {k["name"]: k for k in keys}
    assert by_name["caller-a"]["status"] == "active" and by_name["short"]["status"] == "expired"
    assert all("key" not in k and "digest" not in k for k in keys)


def test_keys_are_stored_hashed(gateway_factory: Any, stage_dir: Path) -> None:
    gw = gateway_factory("--auth-functions")
    key = create_key(gw, "ci", ["a"])
    secret = key.split("_", 2)[2]
    for path in gw.state_dir.iterdir():  # gateway.db, its WAL, credentials.json, logs: the secret is nowhere
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and key.encode() not in data, path
    with sqlite3.connect(gw.state_dir / "gateway.db") as db:
        rows = db.execute("SELECT id, name, digest FROM api_keys").fetchall()
    assert len(rows) == 1 and rows[0][1] == "ci"
    import hashlib

    assert rows[0][2] == hashlib.sha256(secret.encode()).hexdigest()


def test_a_key_never_administers_and_garbage_keys_are_401(gateway_factory: Any, stage_dir: Path) -> None:
    gw = gateway_factory("--auth-functions")
    gw.deploy(stage(gw, stage_dir, "a"))
    key = create_key(gw, "k", ["a"])
    for path in ("/system/functions", "/system/keys", "/system/info"):
        status, _, body = gw.request("GET", path, headers=bearer(key))
        assert status == 401 and body["code"] == "unauthorized", (path, body)
    key_id = key.split("_")[1]
    for bad in ("hk_", "hk_zz", f"hk_{key_id}_short", f"hk_{key_id}_" + "A" * 43, "hk_" + "0" * 16 + "_" + "A" * 43,
                key[:-1] + ("A" if key[-1] != "A" else "B"), "not-a-key", gw.token + "x"):
        status, _, body = gw.invoke("a", {}, headers=bearer(bad))
        assert status == 401 and body["code"] == "unauthorized" and body["function"] == "a", (bad, body)


@pytest.mark.parametrize("body, field", [
    ({"functions": ["a"]}, "name"),
    ({"name": "has space", "functions": ["a"]}, "name"),
    ({"name": "router:x:1", "functions": ["a"]}, "name"),  # internal names are not for users
    ({"name": "k"}, "functions"),
    ({"name": "k", "functions": []}, "functions"),
    ({"name": "k", "functions": "a"}, "functions"),
    ({"name": "k", "functions": ["a", "Not_A_Name"]}, "functions[1]"),
    ({"name": "k", "functions": ["a"], "expires": "-1d"}, "expires"),
    ({"name": "k", "functions": ["a"], "expires": "soon"}, "expires"),
    ({"name": "k", "functions": ["a"], "expires": 0}, "expires"),
    ({"name": "k", "functions": ["a"], "expires": True}, "expires"),
    ({"name": "k", "functions": ["a"], "scope": "all"}, "scope"),
    (["k"], "(body)"),
])
def test_malformed_key_requests_are_400_naming_the_field(shared_gateway: Any, body: Any, field: str) -> None:
    status, out = shared_gateway.admin("POST", "/system/keys", body)
    assert status == 400 and out["field"] == field, out


def test_key_conflicts_and_unknown_names(shared_gateway: Any) -> None:
    gw = shared_gateway
    create_key(gw, "twice", ["a"])
    status, out = gw.admin("POST", "/system/keys", {"name": "twice", "functions": ["a"]})
    assert status == 409 and out["field"] == "name", out
    status, out = gw.admin("DELETE", "/system/keys/missing")
    assert status == 404 and "missing" in out["error"], out
    status, _, out = gw.request("POST", "/system/keys", {"name": "x", "functions": ["a"]})
    assert status == 401, out  # anonymous
    status, _, out = gw.request("DELETE", "/system/keys/twice")
    assert status == 401, out


def test_malformed_authorization_headers_are_4xx_json_never_500(gateway_factory: Any, stage_dir: Path) -> None:
    gw = gateway_factory("--auth-functions")
    gw.deploy(stage(gw, stage_dir, "a"))
    key = create_key(gw, "k", ["a"])
    cases: list[tuple[list[tuple[str, str | bytes]], int]] = [
        ([("Authorization", "Bearer \xff\xfe")], 400),  # latin-1 bytes on the wire: not ASCII
        ([("Authorization", "Bearer ключ".encode())], 400),  # UTF-8 bytes
        ([("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {gw.token}")], 400),  # duplicate
        ([("Authorization", f"Bearer {gw.token}"), ("Authorization", "Bearer x")], 400),
        ([("Authorization", "Token abc")], 401),  # wrong scheme
        ([("Authorization", f"Digest {key}")], 401),
        ([("Authorization", "Bearer")], 401),
        ([("Authorization", "Bearer    ")], 401),
        ([("Authorization", "Basic !!!notbase64")], 401),
        ([("Authorization", "Basic " + "w4k=")], 401),  # base64 of non-UTF-8-ish garbage
        ([("Authorization", "Bearer " + "A" * 6000)], 400),  # huge, under the server's header limit
    ]
    for headers, want in cases:
        for path in ("/function/a", "/system/functions"):
            status, ctype, body = raw_request(gw, path, headers)
            assert status == want, (headers, path, status, body)
            assert ctype.startswith("application/json"), (headers, ctype, body)
            error = json.loads(body)
            assert error["code"] in ("bad_request", "unauthorized") and error["error"], error
            if want == 400:
                assert error["field"] == "Authorization", error
    # what is not HTTP (a control character, a header beyond aiohttp's 8190-byte limit) is refused by the
    # HTTP parser itself, before the application: a plain-text 400 without a traceback, and the gateway carries on
    for value in ("Bearer a\x7fb", "Bearer " + "A" * 100_000):
        status, _, body = raw_request(gw, "/function/a", [("Authorization", value)])
        assert status == 400 and b"Traceback" not in body, body[:200]
    assert gw.invoke("a", {}, headers=bearer(key))[0] == 200
    assert "unhandled error" not in gw.log()  # nothing reached the middleware's 500 path


def test_auth_key_protects_one_function_on_an_open_gateway(gateway: Any, stage_dir: Path) -> None:
    gw = gateway
    gw.deploy(stage(gw, stage_dir, "open"))
    gw.deploy(stage(gw, stage_dir, "closed", auth="key"))
    assert gw.status("closed")["hydro"]["auth"] == "key"
    status, _, body = gw.invoke("open", {})
    assert status == 200, body
    status, _, body = gw.invoke("closed", {})
    assert status == 401 and body["function"] == "closed", body
    key = create_key(gw, "c", ["closed"])
    status, _, body = gw.invoke("closed", {}, headers=bearer(key))
    assert status == 200 and "authorization" not in body["seen"]["closed"]["headers"], body
    # a key (or the admin token) sent to an open function is still the gateway's: never forwarded
    for credential in (key, gw.token):
        status, _, body = gw.invoke("open", {}, headers=bearer(credential))
        assert status == 200 and "authorization" not in body["seen"]["open"]["headers"], body
    status, _, body = gw.invoke("open", {}, headers=bearer(key[:-3]))  # a broken key to an open function
    assert status == 200 and "authorization" not in body["seen"]["open"]["headers"], body
    status, _, body = gw.invoke("open", {}, headers={"Authorization": "Bearer for-the-function"})
    assert status == 200 and body["seen"]["open"]["headers"]["authorization"] == "Bearer for-the-function"


def _assert_no_gateway_credential(seen: dict[str, Any], admin: str, password: str, caller_key: str) -> None:
    """Nothing the gateway owns (token, password, the caller's key, a router key) reached this function."""
    dump = json.dumps(seen)
    assert admin not in dump and password not in dump and caller_key not in dump
    assert "authorization" not in seen["headers"]
    assert "HYDRO_ROUTER_KEY" not in seen["env"] and "hk_" not in dump


def _timings(headers: dict[str, str]) -> list[dict[str, Any]]:
    return json.loads(next(v for k, v in headers.items() if k.lower() == "x-hydro-stage-timings"))


def test_pipeline_under_auth_functions_uses_the_router_key(gateway_factory: Any, stage_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # replicas as fresh processes (no zygote), so /proc/<pid>/environ is the environment the router got
    monkeypatch.setenv("HYDRO_ZYGOTE", "0")
    gw = gateway_factory("--auth-functions")
    creds = json.loads((gw.state_dir / "credentials.json").read_text())
    gw.deploy(stage(gw, stage_dir, "a", load_sleep=1.0))
    gw.deploy(stage(gw, stage_dir, "b", load_sleep=1.0))
    gw.deploy(router("pipe", ["a", "b"]))
    caller = create_key(gw, "caller", ["pipe"])
    only_a = create_key(gw, "only-a", ["a"])

    status, _, body = gw.invoke("pipe", {})
    assert status == 401 and body["function"] == "pipe", body
    status, _, body = gw.invoke("pipe", {}, headers=bearer(only_a))
    assert status == 403 and body["function"] == "pipe", body

    status, headers, body = gw.invoke("pipe", {}, headers=bearer(caller), timeout=120)
    assert status == 200 and body["trail"] == ["a", "b"], body
    timings = _timings(headers)
    # b was started by the router's prewarm (sent with the router's key) while a was loading
    assert timings[1].get("prewarmed") is True, timings
    for name in ("a", "b"):
        _assert_no_gateway_credential(body["seen"][name], creds["token"], creds["password"], caller)
        assert body["seen"][name]["headers"]["x-hydro-pipeline"] == "pipe"
    # the router replica holds its own key (scoped to a and b), never the admin token or the caller's key
    router_pid = gw.replica_pids("pipe")[0]
    environ = Path(f"/proc/{router_pid}/environ").read_bytes()
    assert creds["token"].encode() not in environ and caller.encode() not in environ
    router_key = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)[b"HYDRO_ROUTER_KEY"]
    router_key_text = router_key.decode()
    assert router_key_text.startswith("hk_")
    status, keys = gw.admin("GET", "/system/keys")
    internal = [k for k in keys if k["internal"]]
    assert [(k["name"], k["functions"], k["status"]) for k in internal] == [("router:pipe:1", ["a", "b"], "active")]
    # the router's key calls its stages only: not the pipeline itself, not another function
    gw.deploy(stage(gw, stage_dir, "c"))
    assert gw.invoke("a", {}, headers=bearer(router_key_text))[0] == 200
    assert gw.invoke("c", {}, headers=bearer(router_key_text))[0] == 403
    assert gw.invoke("pipe", {}, headers=bearer(router_key_text))[0] == 403
    # the admin token works at the door too, and is not forwarded either
    status, _, body = gw.invoke("pipe", {}, headers=bearer(creds["token"]))
    assert status == 200, body
    _assert_no_gateway_credential(body["seen"]["b"], creds["token"], creds["password"], caller)

    # a redeploy rotates the router's key: the new replica gets a new one, the old one is revoked once
    # the old replica has drained
    gw.deploy(router("pipe", ["a", "b"], timeout=30))
    gw.wait_for(lambda: {k["name"]: k["status"] for k in gw.admin("GET", "/system/keys")[1] if k["internal"]}
                == {"router:pipe:1": "revoked", "router:pipe:2": "active"}, timeout=60, what="key rotation")
    assert gw.invoke("a", {}, headers=bearer(router_key_text))[0] == 401
    status, _, body = gw.invoke("pipe", {}, headers=bearer(caller))
    assert status == 200 and body["trail"] == ["a", "b"], body

    # removing the router revokes its key at once
    status, _ = gw.admin("DELETE", "/system/function/pipe")
    assert status == 202
    status, keys = gw.admin("GET", "/system/keys")
    assert all(k["status"] == "revoked" for k in keys if k["internal"]), keys
    # an internal key cannot be revoked (or created) by hand
    status, out = gw.admin("DELETE", "/system/keys/router:pipe:2")
    assert status == 400 and out["field"] == "name", out
