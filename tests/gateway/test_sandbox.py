"""A hostile function on the local provider: it reaches nothing of the gateway's or of other functions.

Real gateway, real replicas (forked by the zygote, and plain processes with HYDRO_ZYGOTE=0): the
function tries to read the gateway's credentials, database, another function's secret and log,
the gateway's and the other replica's /proc/<pid>/environ, and to write outside its home; it lists
its own environment. The gateway runs with credentials of its own in its environment.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.gateway.secrets import write_secret
from hydro_serving.replica.environment import BASE_KEYS, HOST_TUNING, TELEMETRY
from hydro_serving.replica.sandbox import sandbox_mode

GATEWAY_SECRETS = {"AWS_SECRET_ACCESS_KEY": "gateway-aws-secret-value", "AWS_ACCESS_KEY_ID": "gateway-aws-key-id",
                   "GATEWAY_ONLY_PASSWORD": "gateway-only-password-value"}

HOSTILE = '''
import os


def attempt(action):
    try:
        out = action()
        return {"ok": True, "got": out if isinstance(out, str) else repr(out)}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}


def read(path):
    with open(path, "rb") as fh:
        return fh.read().decode(errors="replace")


def write(path):
    with open(path, "w") as fh:
        fh.write("pwned")
    return "written"


def handle(payload, context):
    targets = payload["read"]
    results = {name: attempt(lambda p=path: read(p)) for name, path in targets.items()}
    for name, path in payload["list"].items():
        results["list:" + name] = attempt(lambda p=path: sorted(os.listdir(p)))
    results.update({"write:" + name: attempt(lambda p=path: write(p)) for name, path in payload["write"].items()})
    home = os.environ.get("HOME", "")
    own = attempt(lambda: read("/proc/self/environ"))
    return {"results": results, "environ": dict(os.environ), "self_environ": own,
            "uid": os.getuid(), "home_writable": attempt(lambda: write(os.path.join(home, "mine.txt")))}
'''

ENV_FILE = "FROM_FILE=file-value\nexport QUOTED='a b'\n"


def _start(gateway_factory: Any, monkeypatch: pytest.MonkeyPatch, zygote: bool, mode: str) -> Any:
    for key, value in GATEWAY_SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HYDRO_ZYGOTE", "1" if zygote else "0")
    monkeypatch.setenv("HYDRO_SANDBOX", mode)
    return gateway_factory()


# auto: uid mode here (the tests run as root), as in CI; userns: the mode of a gateway that is not root,
# forced here to run it too
@pytest.mark.parametrize(("mode", "zygote"), [("auto", True), ("auto", False), ("userns", True), ("userns", False)],
                         ids=["zygote", "plain-process", "userns-zygote", "userns-plain-process"])
def test_hostile_function_reaches_nothing_but_its_own(gateway_factory: Any, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, zygote: bool, mode: str) -> None:
    gw = _start(gateway_factory, monkeypatch, zygote, mode)
    state = gw.state_dir
    write_secret(state, "mine", b"my-own-secret")
    write_secret(state, "theirs", b"their-secret-value")
    other = gw.write_handler(tmp_path / "other")
    gw.deploy(gw.python_spec("other", other, secrets=["theirs"]))
    assert gw.invoke("other", {"hello": 1})[0] == 200  # its log and its secrets copy now exist
    other_pid = gw.replica_pids("other")[0]

    hostile_dir = gw.write_handler(tmp_path / "hostile", HOSTILE)
    (tmp_path / "hostile.env").write_text(ENV_FILE)
    gw.deploy(gw.python_spec("hostile", hostile_dir, secrets=["mine"], environment={"DECLARED": "yes"},
                             environment_file=[str(tmp_path / "hostile.env")]))
    payload = {
        "read": {
            "credentials": str(state / "credentials.json"),
            "database": str(state / "gateway.db"),
            "secret store": str(state / "secrets" / "theirs"),
            "their secret copy": str(state / "functions" / "other" / "secrets" / "theirs"),
            "their log": str(state / "logs" / "other.log"),
            "own log": str(state / "logs" / "hostile.log"),
            "their spec": str(state / "functions" / "other" / "spec.json"),
            "gateway environ": f"/proc/{gw.proc.pid}/environ",
            "their replica environ": f"/proc/{other_pid}/environ",
        },
        "list": {"state": str(state), "secret store": str(state / "secrets"), "functions": str(state / "functions"),
                 "logs": str(state / "logs"), "own folder": str(state / "functions" / "hostile")},
        "write": {"handler": str(hostile_dir / "handler.py"),
                  "spec": str(state / "functions" / "hostile" / "spec.json"),
                  "their handler": str(other / "handler.py")},
    }
    status, _, body = gw.invoke("hostile", payload)
    assert status == 200, body
    results = body["results"]
    # listing the state directory shows (at most) the path to its own folder: the rest is not there
    # its start file is gone; a per-function uid (root gateway, mode auto) also has its passwd/group entries
    own_files = "['group', 'home', 'passwd', 'run', 'secrets', 'spec.json']" if mode == "auto" and os.geteuid() == 0 \
        else "['home', 'run', 'secrets', 'spec.json']"
    own_path = {"list:state": "['functions']", "list:functions": "['hostile']", "list:own folder": own_files}
    for name, shown in own_path.items():
        if results[name]["ok"]:
            assert results.pop(name)["got"] == shown, name
    leaked = {name: r for name, r in results.items() if r["ok"]}
    assert leaked == {}, leaked

    # its environment: what it declared, the documented base and the platform's variables, nothing else
    env = body["environ"]
    declared = {"DECLARED": "yes", "FROM_FILE": "file-value", "QUOTED": "a b"}
    assert {k: env.get(k) for k in declared} == declared
    platform = {"HYDRO_FUNCTION_NAME", "HYDRO_GATEWAY_URL", "HYDRO_FUNCTION_SPEC", "HYDRO_SECRETS_DIR", "HOME",
                "TMPDIR", "PYTHONUNBUFFERED", "PYTHONPATH", "HYDRO_TEMPLATES",
                "SERVER_SOFTWARE"}  # the last one set by the runtime's own server (gunicorn)
    # the host's BLAS/thread tuning and the operator's telemetry settings (documented)
    tuning = {k for k in os.environ if HOST_TUNING.match(k) or TELEMETRY.match(k)}
    assert set(env) - set(declared) <= platform | set(BASE_KEYS) | tuning, sorted(set(env) - set(declared))
    # its own /proc/self/environ (what the process was started with) holds no secret either; a non-dumpable
    # userns replica of a non-root gateway may not read it at all
    assert body["self_environ"]["ok"] or mode == "userns", body["self_environ"]
    everything = json.dumps(env) + body["self_environ"].get("got", "")
    for key, value in GATEWAY_SECRETS.items():
        assert value not in everything, key
    assert gw.token not in everything
    # its own secret is a file it can read; its home is its own
    assert Path(env["HYDRO_SECRETS_DIR"]).name == "secrets"
    assert body["home_writable"]["ok"] is True, body["home_writable"]
    if sandbox_mode({"HYDRO_SANDBOX": mode}) == "uid":
        assert body["uid"] != os.getuid()
    assert (other / "handler.py").read_text() != "pwned"


def test_secret_is_readable_by_its_function(gateway: Any, tmp_path: Path) -> None:
    """The other side: a sandboxed function reads its own declared secret (0600, its own user)."""
    write_secret(gateway.state_dir, "api", b"value-1")
    handler = '''
import os

def handle(payload, context):
    return {"secret": open(os.path.join(os.environ["HYDRO_SECRETS_DIR"], "api")).read(), "uid": os.getuid()}
'''
    folder = gateway.write_handler(tmp_path / "reader", handler)
    gateway.deploy(gateway.python_spec("reader", folder, secrets=["api"]))
    status, _, body = gateway.invoke("reader", {})
    assert status == 200, body
    assert body["secret"] == "value-1"


def test_a_sandboxed_user_has_a_name_and_a_home(gateway: Any, tmp_path: Path) -> None:
    """Software that asks the user database (Java's user.home, getpass) finds the replica's own user,
    and the host's users are still listed (the replica's passwd is the host's plus its own line)."""
    handler = '''
import getpass
import os
import pwd

def handle(payload, context):
    me = pwd.getpwuid(os.getuid())
    return {"user": getpass.getuser(), "home": me.pw_dir, "env_home": os.environ["HOME"],
            "root_listed": pwd.getpwnam("root").pw_uid == 0, "uid": os.getuid(),
            "writable": os.access(me.pw_dir, os.W_OK), "passwd_writable": os.access("/etc/passwd", os.W_OK)}
'''
    folder = gateway.write_handler(tmp_path / "whoami", handler)
    gateway.deploy(gateway.python_spec("whoami", folder))
    status, _, body = gateway.invoke("whoami", {})
    assert status == 200, body
    assert body["uid"] != 0 and body["user"] == "hydro-whoami"
    assert body["home"] == body["env_home"] and body["writable"] and body["root_listed"]
    assert not body["passwd_writable"]


def test_state_directory_is_private(gateway: Any, tmp_path: Path) -> None:
    """Everything in the state directory is 0700/0600 to other users; a function's own folder is
    shared with that function's group only (uid mode), never with every user."""
    write_secret(gateway.state_dir, "k", b"v")
    folder = gateway.write_handler(tmp_path / "fn")
    gateway.deploy(gateway.python_spec("fn", folder, secrets=["k"]))
    assert gateway.invoke("fn", {"x": 1})[0] == 200
    state = gateway.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("gateway.db", "credentials.json", "logs/fn.log", "secrets/k"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    for name in ("logs", "secrets", "functions", "zygotes"):
        path = state / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, name
    checked = 0
    for root, dirs, files in os.walk(state):
        for entry in [*dirs, *files]:
            path = Path(root) / entry
            mode = stat.S_IMODE(path.lstat().st_mode)
            rel = path.relative_to(state)
            inside_function = rel.parts[:1] == ("functions",) and len(rel.parts) > 1
            if rel == Path("gateway.sock"):  # the gateway's API socket (0666 like its TCP port): other users reach
                assert stat.S_ISSOCK(path.lstat().st_mode)  # it only through this 0700 folder, routers through
                assert mode == 0o666  # the bind of this one file into their sandbox (test_unix_sockets.py)
            elif not inside_function:  # reachable by nobody but the gateway
                assert mode & 0o077 == 0, f"{rel} is {oct(mode)}"
            else:  # its function's user or group at most, never every user
                assert mode & 0o007 == 0 or "model-cache" in rel.parts, f"{rel} is {oct(mode)}"
            checked += 1
    assert checked > 8


@pytest.mark.s3
@pytest.mark.parametrize("replica_credentials", [False, True], ids=["gateway-prefetch", "read-only-replica-keys"])
def test_store_model_on_private_s3(gateway_factory: Any, rgw_s3: dict[str, str], iris_model_file: Path,
                                   monkeypatch: pytest.MonkeyPatch, replica_credentials: bool) -> None:
    """A `latest` model on a private S3 serves; a replica holds store keys only when the operator gives it some."""
    import uuid

    from hydro_serving.store import open_store

    for key, value in rgw_s3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("HYDRO_STORE", f"s3://sandbox-{uuid.uuid4().hex[:10]}/m")
    if replica_credentials:  # RGW's one user stands in for a read-only one here
        monkeypatch.setenv("HYDRO_REPLICA_AWS_ACCESS_KEY_ID", rgw_s3["AWS_ACCESS_KEY_ID"])
        monkeypatch.setenv("HYDRO_REPLICA_AWS_SECRET_ACCESS_KEY", rgw_s3["AWS_SECRET_ACCESS_KEY"])
    open_store().upload(iris_model_file, "iris", framework="sklearn")
    monkeypatch.setenv("HYDRO_ZYGOTE", "0")  # a fresh process: its /proc/<pid>/environ is the environment it got
    gw = gateway_factory()
    gw.deploy({"name": "iris", "lang": "sklearn", "model": "iris"})  # the alias latest, resolved at each start
    status, _, body = gw.invoke("iris", [[5.1, 3.5, 1.4, 0.2]])
    assert status == 200 and body == [0], body
    deployed = json.loads((gw.state_dir / "functions" / "iris" / "spec.json").read_text())
    assert deployed["model"] == "iris"
    pid = gw.replica_pids("iris")[0]
    raw = Path(f"/proc/{pid}/environ").read_text()  # the test runs as root: it may look
    replica_env = dict(line.split("=", 1) for line in raw.split("\0") if "=" in line)
    assert replica_env["HYDRO_STORE"] == os.environ["HYDRO_STORE"]
    if replica_credentials:
        assert replica_env["AWS_ACCESS_KEY_ID"] == rgw_s3["AWS_ACCESS_KEY_ID"]
        assert replica_env["HYDRO_CACHE"].endswith("/home/cache")
    else:  # the gateway fetched it: the replica has no key, and reads the version the gateway resolved
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(replica_env)
        assert replica_env["HYDRO_CACHE"].endswith("/model-cache")
        assert json.loads(Path(replica_env["HYDRO_FUNCTION_SPEC"]).read_text())["model"] == "iris:1"


def test_malformed_environment_file_refuses_the_deploy(shared_gateway: Any, tmp_path: Path) -> None:
    """One strict parser: a bad line is a 400 naming the field, the file and the line; nothing starts."""
    gw = shared_gateway
    folder = gw.write_handler(tmp_path / "envbad")
    env_file = tmp_path / "bad.env"
    env_file.write_text("GOOD=1\nexport PASSWORD='unbalanced\n")
    body = {"service": "envbad", "hydro": gw.python_spec("envbad", folder, environment_file=[str(env_file)])}
    status, out = gw.admin("POST", "/system/functions", body)
    assert status == 400, out
    assert out["field"] == "hydro.environment_file[0]" and f"{env_file} line 2" in out["error"]
    assert "Traceback" not in json.dumps(out)
    assert gw.admin("GET", "/system/function/envbad")[0] == 404
