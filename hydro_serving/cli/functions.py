"""``hydro deploy|up|list|describe|invoke|remove|logs``: thin commands over :class:`GatewayClient`.

The gateway URL comes from ``--gateway``, then the stack file's ``provider.gateway``, then
``HYDRO_GATEWAY``; credentials from ``HYDRO_TOKEN``, else the state directory (``--state`` /
``HYDRO_STATE`` / the default the gateway uses too).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from hydro_serving.errors import StackError
from hydro_serving.gateway.auth import client_token
from hydro_serving.gateway.client import GatewayClient, ensure_local_gateway, resolve_gateway_url
from hydro_serving.gateway.config import default_state_dir
from hydro_serving.stack import Stack, load_stack

gateway_option = click.option("--gateway", "gateway_url", default=None, help="Gateway URL (else provider.gateway "
                              "of the stack file, else HYDRO_GATEWAY, else http://127.0.0.1:8080).")
state_option = click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="The gateway's state directory, where its credentials are (else HYDRO_STATE).")
file_option = click.option("-f", "--file", "stack_file", type=click.Path(dir_okay=False, path_type=Path),
                           default=None, help="Stack file (default: stack.yml).")


def _stack(stack_file: Path | None, required: bool) -> Stack | None:
    """The stack file, when one is needed or simply present (only for its provider.gateway)."""
    path = stack_file or Path("stack.yml")
    if required or stack_file is not None:
        return load_stack(path)
    if not path.exists():
        return None
    try:
        return load_stack(path)
    except StackError:
        return None  # a broken stack.yml in the folder must not stop 'hydro list'


def _client(gateway_url: str | None, state: Path | None, stack: Stack | None) -> GatewayClient:
    return GatewayClient(resolve_gateway_url(gateway_url, stack), client_token(state))


def _build_contexts(stack: Stack, names: list[str] | None) -> bool:
    """Build contexts with the builder when it is installed; the local provider runs from source anyway."""
    try:
        module = importlib.import_module("hydro_serving.builder.context")
    except ModuleNotFoundError as exc:
        if exc.name in ("hydro_serving.builder.context", "hydro_serving.builder"):
            return False
        raise
    module.build_contexts(stack, names or None)
    return True


def _print_deployed(results: list[tuple[str, str]], url: str) -> None:
    for name, action in results:
        click.echo(f"{action:9} {name}  ->  {url}/function/{name}")


@click.command()
@file_option
@click.option("--filter", "filters", multiple=True, help="Deploy only this function (repeatable).")
@gateway_option
@state_option
def deploy(stack_file: Path | None, filters: tuple[str, ...], gateway_url: str | None, state: Path | None) -> None:
    """Create or update every function of the stack on the gateway (PUT, then POST on 404)."""
    stack = _stack(stack_file, required=True)
    assert stack is not None
    client = _client(gateway_url, state, stack)
    _print_deployed(client.deploy_stack(stack, list(filters)), client.url)


@click.command()
@file_option
@click.option("--filter", "filters", multiple=True, help="Only this function (repeatable).")
@gateway_option
@state_option
@click.option("--no-build", is_flag=True, help="Skip building contexts.")
def up(stack_file: Path | None, filters: tuple[str, ...], gateway_url: str | None, state: Path | None,
       no_build: bool) -> None:
    """Build, then deploy; starts a local gateway in the background when none answers."""
    stack = _stack(stack_file, required=True)
    assert stack is not None
    if not no_build and _build_contexts(stack, list(filters)):
        click.echo("built contexts under build/")
    url = resolve_gateway_url(gateway_url, stack)
    state_dir = (state or default_state_dir()).expanduser().resolve()
    url, started = ensure_local_gateway(url, state_dir)
    if started:
        click.echo(f"started a local gateway at {url} (state {state_dir}, log {state_dir / 'gateway.log'}); "
                   "stop it with: kill $(cat " + str(state_dir / "gateway.pid") + ")")
    client = GatewayClient(url, client_token(state_dir))
    _print_deployed(client.deploy_stack(stack, list(filters)), client.url)


@click.command("list")
@file_option
@gateway_option
@state_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw FunctionStatus JSON.")
def list_functions(stack_file: Path | None, gateway_url: str | None, state: Path | None, as_json: bool) -> None:
    """List deployed functions with replicas and invocation counts."""
    functions = _client(gateway_url, state, _stack(stack_file, required=False)).list_functions()
    if as_json:
        click.echo(json.dumps(functions, indent=2))
        return
    click.echo(f"{'FUNCTION':30} {'LANG':14} {'REPLICAS':>8} {'READY':>6} {'INVOCATIONS':>12}")
    for fn in functions:
        lang = (fn.get("hydro") or {}).get("lang", "")
        click.echo(f"{fn['name']:30} {lang:14} {fn['replicas']:>8} {fn['availableReplicas']:>6} "
                   f"{fn['invocationCount']:>12}")


@click.command()
@click.argument("name")
@file_option
@gateway_option
@state_option
def describe(name: str, stack_file: Path | None, gateway_url: str | None, state: Path | None) -> None:
    """Show one function's deployment and replicas (JSON)."""
    status = _client(gateway_url, state, _stack(stack_file, required=False)).describe(name)
    click.echo(json.dumps(status, indent=2))


@click.command()
@click.argument("name")
@click.option("-d", "--data", default=None, help="Request body (else read from stdin).")
@click.option("--path", "path", default="", help="Path under the function, e.g. v2/models/NAME/infer.")
@click.option("-X", "--method", default="POST", show_default=True)
@click.option("-H", "--header", "headers", multiple=True, help="Extra header 'Name: value' (repeatable).")
@click.option("-v", "--verbose", is_flag=True, help="Print the status and headers to stderr.")
@file_option
@gateway_option
@state_option
def invoke(name: str, data: str | None, path: str, method: str, headers: tuple[str, ...], verbose: bool,
           stack_file: Path | None, gateway_url: str | None, state: Path | None) -> None:
    """Invoke a function; exits non-zero when it answers with an error status.

    Sends the gateway token when one is found (HYDRO_TOKEN or the state directory), so a gateway
    run with --auth-functions accepts the call; the gateway never passes that token to the function.
    """
    body = data.encode() if data is not None else (b"" if sys.stdin.isatty() else sys.stdin.buffer.read())
    extra: dict[str, str] = {}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{header}' is not 'Name: value'", param_hint="--header")
        extra[key.strip()] = value.strip()
    client = _client(gateway_url, state, _stack(stack_file, required=False))
    response = client.invoke(name, body, path=path, method=method.upper(), headers=extra)
    if verbose:
        click.echo(f"HTTP {response.status}", err=True)
        for key, value in response.headers.items():
            click.echo(f"{key}: {value}", err=True)
    out = response.body.decode(errors="replace")
    if response.ok:
        click.echo(out)
        return
    click.echo(out, err=True)
    sys.exit(1)


@click.command()
@click.argument("name")
@file_option
@gateway_option
@state_option
def remove(name: str, stack_file: Path | None, gateway_url: str | None, state: Path | None) -> None:
    """Remove a function (its in-flight requests finish first)."""
    _client(gateway_url, state, _stack(stack_file, required=False)).remove(name)
    click.echo(f"removed {name}")


@click.command()
@click.argument("name")
@click.option("--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@file_option
@gateway_option
@state_option
def logs(name: str, follow: bool, tail: int | None, stack_file: Path | None, gateway_url: str | None,
         state: Path | None) -> None:
    """Print a function's replica logs."""
    client = _client(gateway_url, state, _stack(stack_file, required=False))
    for line in client.logs(name, tail=tail, follow=follow):
        click.echo(line)


# ---- secrets (the gateway's local store: read by the local provider) ----------------------------------


@click.group()
def secret() -> None:
    """Secrets of functions on a gateway running on this machine (files in <state>/secrets, mode 0600).

    A function declaring ``secrets: [NAME]`` reads ``$HYDRO_SECRETS_DIR/NAME``; deploying it fails
    with a 400 naming ``hydro.secrets[i]`` while the secret does not exist.
    """


@secret.command("create")
@click.argument("name")
@click.option("--from-file", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Read the value from this file (bytes as they are).")
@click.option("--from-literal", "from_literal", default=None, help="The value itself (visible in shell history).")
@state_option
def secret_create(name: str, from_file: Path | None, from_literal: str | None, state: Path | None) -> None:
    """Create or replace secret NAME; replicas started afterwards see the new value."""
    from hydro_serving.gateway.secrets import write_secret

    if (from_file is None) == (from_literal is None):
        raise click.UsageError("give exactly one of --from-file or --from-literal")
    data = from_file.read_bytes() if from_file is not None else str(from_literal).encode()
    path = write_secret((state or default_state_dir()).expanduser().resolve(), name, data)
    click.echo(f"secret {name} written to {path}")


@secret.command("list")
@state_option
def secret_list(state: Path | None) -> None:
    """List secret names (never their values)."""
    from hydro_serving.gateway.secrets import store_dir

    folder = store_dir((state or default_state_dir()).expanduser().resolve())
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            click.echo(path.name)


@secret.command("remove")
@click.argument("name")
@state_option
def secret_remove(name: str, state: Path | None) -> None:
    """Remove secret NAME (running replicas keep their copy; new starts of functions using it fail)."""
    from hydro_serving.gateway.secrets import check_name, store_dir

    check_name(name)
    path = store_dir((state or default_state_dir()).expanduser().resolve()) / name
    if not path.is_file():
        raise click.ClickException(f"no secret '{name}' at {path}")
    path.unlink()
    click.echo(f"removed secret {name}")
