"""``hydro demo``: the product-matching pipeline of the original Hydro Serving, in one command.

Thin on purpose: training lives in :mod:`hydro_serving.demo`, the gateway client and the
start-a-local-gateway logic in :mod:`hydro_serving.gateway.client` (shared with ``hydro up``).
The command trains and uploads the classifiers when the store lacks them, starts a local
gateway when none answers, deploys the repository's ``stack.yml``, sends the original README's
request once to prove the pipeline works, and prints the ``curl`` that does the same.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click

from hydro_serving.errors import InternalError


def _line(label: str, text: str) -> None:
    click.echo(f"  {click.style(f'{label:8}', bold=True)}{text}")


@click.command()
@click.option("--gateway", "gateway_url", default=None, metavar="URL",
              help="Gateway to deploy to (else provider.gateway of the stack, else HYDRO_GATEWAY, else "
                   "http://127.0.0.1:8080); a local one is started when none answers.")
@click.option("--store", "store_url", default=None, metavar="URL",
              help="Model store, s3://bucket[/prefix] or file:///dir (else the stack's provider.store, else "
                   "HYDRO_STORE, else a directory under HYDRO_HOME).")
@click.option("-f", "--file", "stack_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Stack file (default: the repository's stack.yml).")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State directory of the local gateway (else HYDRO_STATE).")
@click.option("--retrain", is_flag=True, help="Train and upload new versions even if the store has the models.")
def demo(gateway_url: str | None, store_url: str | None, stack_file: Path | None, state: Path | None,
         retrain: bool) -> None:
    """Train, upload and deploy the product-matching demo, then show how to call it."""
    from hydro_serving.cli.credentials import require_token, resolve_target
    from hydro_serving.demo.paths import repo_root
    from hydro_serving.demo.provision import check_answer, ensure_models, pipeline_name, with_store
    from hydro_serving.gateway.client import GatewayClient, ensure_local_gateway, error_from
    from hydro_serving.gateway.config import default_state_dir
    from hydro_serving.stack import load_stack
    from hydro_serving.store import open_store

    stack_path = stack_file or repo_root() / "stack.yml"
    stack = load_stack(stack_path)
    store = open_store(store_url or stack.provider.store)
    click.echo(click.style("Hydro Serving demo: product matching", bold=True) + f"  ({stack_path})")
    _line("store", store.url)

    report = ensure_models(store, stack, retrain, say=lambda text: _line("train", text))
    for name, metrics in report.scores.items():
        _line("", f"{name:17} {metrics.line()}")
    if report.uploaded:
        _line("models", f"uploaded {', '.join(report.uploaded)} ({report.seconds:.1f} s)")
    if report.reused:
        _line("models", f"using {', '.join(report.reused)} from the store (--retrain to train again)")

    target = resolve_target(gateway_url, stack)
    state_dir = (state or default_state_dir()).expanduser().resolve()
    url, started = ensure_local_gateway(target.url, state_dir)
    if started:
        _line("gateway", f"started at {url} (log {state_dir / 'gateway.log'}; stop it with hydro down)")
    else:
        _line("gateway", f"{url} is up")
    client = GatewayClient(url, require_token(target, state_dir))
    deployed = client.deploy_stack(with_store(stack, store.url))
    _line("deploy", ", ".join(f"{name} ({action})" for name, action in deployed))

    pipeline = pipeline_name(stack)
    request_file = repo_root() / "functions" / "pm-features" / "product-matching-request.json"
    body = request_file.read_bytes()
    _line("check", f"POST /function/{pipeline} with the original demo's request (a cold start the first time) ...")
    began = time.monotonic()
    # the admin token of this very gateway (never forwarded), so the check passes under --auth-functions too
    response = client.invoke(pipeline, body, timeout=180.0, authorization=f"Bearer {client.token}")
    seconds = time.monotonic() - began
    if not response.ok:
        raise error_from(response, f"{url}/function/{pipeline}")
    answer = response.json()
    problem = check_answer(answer)
    if problem:
        raise InternalError(f"the pipeline answered, but wrongly: {problem}")
    _line("answer", f"{json.dumps(answer)}  ({seconds:.1f} s)")
    click.echo("\nThe iPhone 5 is not an aquarium pump, and it is itself. Call it yourself:\n")
    click.echo(f"  curl -s {url}/function/{pipeline} -H 'Content-Type: application/json' \\\n"
               f"       --data @{shlex.quote(str(request_file))}\n")
    click.echo(f"See the functions with 'hydro list --gateway {url}'; the experiment sends 10% of requests to "
               "the ONNX variant (header X-Hydro-Stage-Timings names the variant).")

