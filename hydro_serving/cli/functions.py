"""``hydro deploy|up|list|describe|invoke|remove|logs``: thin commands over :class:`GatewayClient`.

The gateway URL comes from ``--gateway``, then the stack file's ``provider.gateway``, then
``HYDRO_GATEWAY``. The admin token is sent only to the gateway it belongs to
(:mod:`hydro_serving.cli.credentials`): a stack file naming another gateway gets an error, not
the token; ``hydro invoke`` sends no credential unless asked (``--auth`` or ``--key``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from hydro_serving.cli.credentials import require_token, resolve_target
from hydro_serving.errors import StackError
from hydro_serving.gateway.client import GatewayClient, ensure_local_gateway
from hydro_serving.gateway.config import default_state_dir
from hydro_serving.stack import Stack, load_stack

gateway_option = click.option("--gateway", "gateway_url", default=None, help="Gateway URL (else provider.gateway "
                              "of the stack file, else HYDRO_GATEWAY, else http://127.0.0.1:8080).")
state_option = click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="The gateway's state directory, where its credentials are (else HYDRO_STATE).")
file_option = click.option("-f", "--file", "stack_file", type=click.Path(dir_okay=False, path_type=Path),
                           default=None, help="Stack file (default: stack.yml).")
provider_option = click.option("--provider", type=click.Choice(["gateway", "knative"]), default="gateway",
                               envvar="HYDRO_PROVIDER", show_default=True,
                               help="gateway: the Hydro gateway (local or docker replicas); knative: Knative "
                                    "Services on the Kubernetes cluster of KUBECONFIG (env HYDRO_PROVIDER).")
namespace_option = click.option("-n", "--namespace", default="default", show_default=True, envvar="HYDRO_NAMESPACE",
                                help="Kubernetes namespace (with --provider knative).")


def knative_options(command: Any) -> Any:
    """Options only ``--provider knative`` reads: where images and models are, and how long to wait."""
    for option in reversed([
        click.option("--image-prefix", default=None, help="Registry prefix for images, e.g. registry.example.com/"),
        click.option("--store", "store_url", default=None, help="s3://bucket[/prefix] the functions fetch models "
                     "from (else provider.store of the stack, else HYDRO_STORE)."),
        click.option("--store-endpoint", default=None, help="S3 endpoint URL inside the cluster (MinIO)."),
        click.option("--store-secret", default=None, help="Secret with the S3 credentials (default hydro-store)."),
        click.option("--timeout", "wait_timeout", type=float, default=300.0, show_default=True,
                     help="Seconds to wait for each Service to be Ready."),
    ]):
        command = option(command)
    return command


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


def admin_client(gateway_url: str | None, state: Path | None, stack: Stack | None) -> GatewayClient:
    """A client holding the admin token that belongs to the target gateway (an error when there is none)."""
    target = resolve_target(gateway_url, stack)
    return GatewayClient(target.url, require_token(target, state))



def _build_contexts(stack: Stack, names: list[str] | None) -> bool:
    """Write build contexts (checks paths and templates early); the local provider runs from source anyway."""
    from hydro_serving.builder.context import build_contexts

    build_contexts(stack, names or None)
    return True


def _print_deployed(results: list[tuple[str, str, dict[str, Any]]], url: str) -> None:
    """One line per function; a store model's line says which version its reference resolved to."""
    for name, action, status in results:
        model = (status.get("hydro") or {}).get("model")
        pin = status.get("modelPin")
        unpinned = status.get("modelUnpinned")
        resolved = f"  (model {model} = {pin})" if model and pin else ""
        if model and not pin and unpinned:  # an alias move will not roll this function: say so
            resolved = f"  (model {model} not pinned: {unpinned})"
        click.echo(f"{action:9} {name}  ->  {url}/function/{name}{resolved}")


@click.command()
@file_option
@click.option("--filter", "filters", multiple=True, help="Deploy only this function (repeatable).")
@gateway_option
@state_option
@provider_option
@namespace_option
@knative_options
def deploy(stack_file: Path | None, filters: tuple[str, ...], gateway_url: str | None, state: Path | None,
           provider: str, namespace: str, image_prefix: str | None, store_url: str | None,
           store_endpoint: str | None, store_secret: str | None, wait_timeout: float) -> None:
    """Create or update every function of the stack on the gateway (PUT, then POST on 404), or on Knative."""
    stack = _stack(stack_file, required=True)
    assert stack is not None
    if provider == "knative":
        _deploy_knative(stack, list(filters), namespace, image_prefix, store_url, store_endpoint, store_secret,
                        wait_timeout)
        return
    client = admin_client(gateway_url, state, stack)
    _print_deployed(client.deploy_stack_status(stack, list(filters)), client.url)


def _deploy_knative(stack: Stack, names: list[str], namespace: str, image_prefix: str | None,
                    store_url: str | None, store_endpoint: str | None, store_secret: str | None,
                    wait_timeout: float) -> None:
    from hydro_serving.cli.render import store_for_cluster
    from hydro_serving.deploy.knative import deploy_knative

    results = deploy_knative(stack, names or None, namespace, image_prefix=image_prefix, store_secret=store_secret,
                             store=store_for_cluster(store_url, stack), store_endpoint=store_endpoint,
                             timeout=wait_timeout)
    for name, url in results:
        click.echo(f"ready     {name}  ->  {url}")


@click.command()
@file_option
@click.option("--filter", "filters", multiple=True, help="Only this function (repeatable).")
@gateway_option
@state_option
@click.option("--no-build", is_flag=True, help="Skip building contexts and images.")
@provider_option
@namespace_option
@knative_options
def up(stack_file: Path | None, filters: tuple[str, ...], gateway_url: str | None, state: Path | None,
       no_build: bool, provider: str, namespace: str, image_prefix: str | None, store_url: str | None,
       store_endpoint: str | None, store_secret: str | None, wait_timeout: float) -> None:
    """Build, then deploy; starts a local gateway in the background when none answers.

    Images are built only where replicas run from images: a gateway with the docker provider
    (built, not pushed) and Knative (built and pushed); the local provider runs from source.
    """
    stack = _stack(stack_file, required=True)
    assert stack is not None
    names = list(filters)
    if provider == "knative":
        if not no_build:
            _build_images(stack, names, push=True)
        _deploy_knative(stack, names, namespace, image_prefix, store_url, store_endpoint, store_secret,
                        wait_timeout)
        return
    contexts = _build_contexts(stack, names) if not no_build else None
    if contexts:
        click.echo("built contexts under build/")
    target = resolve_target(gateway_url, stack)
    state_dir = (state or default_state_dir()).expanduser().resolve()
    if stack.provider.trusted_keys and not os.environ.get("HYDRO_TRUSTED_KEYS"):  # a gateway started here trusts them
        os.environ["HYDRO_TRUSTED_KEYS"] = ",".join(stack.provider.trusted_keys)
    url, started = ensure_local_gateway(target.url, state_dir)
    if started:
        stop = "hydro down" + ("" if state is None else f" --state {state_dir}")
        click.echo(f"started a local gateway at {url} (state {state_dir}, log {state_dir / 'gateway.log'}); "
                   f"stop it with: {stop}")
    client = GatewayClient(url, require_token(target, state_dir))
    if contexts and client.info().get("provider", {}).get("orchestration") == "docker":
        _build_images(stack, names, push=False)
    _print_deployed(client.deploy_stack_status(stack, names), client.url)


def _build_images(stack: Stack, names: list[str], push: bool) -> None:
    from hydro_serving.builder.context import build_contexts
    from hydro_serving.builder.images import build_images

    build_images(build_contexts(stack, names or None), push=push, echo=click.echo)


@click.command("list")
@file_option
@gateway_option
@state_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw FunctionStatus JSON.")
@provider_option
@namespace_option
def list_functions(stack_file: Path | None, gateway_url: str | None, state: Path | None, as_json: bool,
                   provider: str, namespace: str) -> None:
    """List deployed functions with replicas and invocation counts."""
    if provider == "knative":
        from hydro_serving.deploy.knative import list_knative

        services = list_knative(namespace)
        if as_json:
            click.echo(json.dumps(services, indent=2, default=str))
            return
        click.echo(f"{'SERVICE':30} {'READY':6} {'REPLICAS':>8}  URL")
        for svc in services:
            replicas = "?" if svc.get("replicas") is None else svc["replicas"]
            ready = "yes" if svc.get("ready") else "no"
            click.echo(f"{svc['name']:30} {ready:6} {replicas:>8}  {svc.get('url') or ''}")
        return
    functions = admin_client(gateway_url, state, _stack(stack_file, required=False)).list_functions()
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
@provider_option
@namespace_option
def describe(name: str, stack_file: Path | None, gateway_url: str | None, state: Path | None, provider: str,
             namespace: str) -> None:
    """Show one function's deployment and replicas (JSON)."""
    if provider == "knative":
        from hydro_serving.deploy.knative import describe_knative

        click.echo(json.dumps(describe_knative(name, namespace), indent=2, default=str))
        return
    status = admin_client(gateway_url, state, _stack(stack_file, required=False)).describe(name)
    click.echo(json.dumps(status, indent=2))


def request_body(data: str | None, data_raw: str | None = None) -> bytes:
    """The body ``hydro invoke`` sends, with curl's meaning of ``-d``: ``@file`` is the file, ``@-`` stdin.

    Users arrive from ``curl -d @payload.json``; sending the literal text ``@payload.json`` made
    the function answer a confusing parse error. ``--data-raw`` keeps a leading ``@`` as text.
    """
    if data is not None and data_raw is not None:
        raise click.UsageError("give -d/--data or --data-raw, not both")
    if data_raw is not None:
        return data_raw.encode()
    if data is None:
        return b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    if not data.startswith("@"):
        return data.encode()
    source = data[1:]
    if source == "-":
        return sys.stdin.buffer.read()
    if not source:
        raise click.BadParameter("'@' must be followed by a file name (or - for stdin)", param_hint="-d/--data")
    try:
        return Path(source).expanduser().read_bytes()
    except FileNotFoundError:
        raise click.BadParameter(f"no file {source} (a body starting with @ names a file, as in curl; send it as "
                                 "text with --data-raw)", param_hint="-d/--data") from None
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror}", param_hint="-d/--data") from None


@click.command()
@click.argument("name")
@click.option("-d", "--data", default=None, help="Request body; @FILE reads the file and @- stdin, as curl does "
              "(else the body is read from stdin when it is not a terminal).")
@click.option("--data-raw", "data_raw", default=None, help="Request body taken as it is, even when it starts with @.")
@click.option("--path", "path", default="", help="Path under the function, e.g. v2/models/NAME/infer.")
@click.option("-X", "--method", default="POST", show_default=True)
@click.option("-H", "--header", "headers", multiple=True, help="Extra header 'Name: value' (repeatable).")
@click.option("-v", "--verbose", is_flag=True, help="Print the status and headers to stderr.")
@click.option("--key", "api_key", default=None, help="Send this API key (hydro key create) as the credential.")
@click.option("--auth", "use_admin", is_flag=True, help="Send the admin token of this gateway (only if the CLI "
              "holds one for it).")
@file_option
@gateway_option
@state_option
def invoke(name: str, data: str | None, data_raw: str | None, path: str, method: str, headers: tuple[str, ...],
           verbose: bool, api_key: str | None, use_admin: bool, stack_file: Path | None, gateway_url: str | None,
           state: Path | None) -> None:
    """Invoke a function; exits non-zero when it answers with an error status.

    No credential is sent unless asked: --key KEY for a function that needs a key (a gateway run
    with --auth-functions, or auth: key), --auth for the admin token. The gateway never passes
    either to the function.
    """
    body = request_body(data, data_raw)
    extra: dict[str, str] = {}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{header}' is not 'Name: value'", param_hint="--header")
        extra[key.strip()] = value.strip()
    if api_key is not None and use_admin:
        raise click.UsageError("give --key or --auth, not both")
    target = resolve_target(gateway_url, _stack(stack_file, required=False))
    authorization = f"Bearer {api_key.strip()}" if api_key is not None else None
    if use_admin:
        authorization = f"Bearer {require_token(target, state)}"
    client = GatewayClient(target.url)
    response = client.invoke(name, body, path=path, method=method.upper(), headers=extra,
                             authorization=authorization)
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
@provider_option
@namespace_option
@click.option("--force", is_flag=True, help="Remove it even if deployed pipelines use it as a stage (they then "
              "answer 503 naming it).")
def remove(name: str, stack_file: Path | None, gateway_url: str | None, state: Path | None, provider: str,
           namespace: str, force: bool) -> None:
    """Remove a function (its in-flight requests finish first); refused for a stage of a deployed pipeline."""
    if provider == "knative":
        from hydro_serving.deploy.knative import remove_knative

        remove_knative([name], namespace)
        click.echo(f"removed {name}")
        return
    users = admin_client(gateway_url, state, _stack(stack_file, required=False)).remove(name, force=force)
    click.echo(f"removed {name}")
    if users:
        click.echo(f"warning: pipeline(s) {', '.join(users)} used {name}; they answer 503 until it is deployed "
                   "again", err=True)


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
    client = admin_client(gateway_url, state, _stack(stack_file, required=False))
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
