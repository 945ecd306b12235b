"""``hydro run NAME``: serve one function from stack.yml in the foreground, through the real runtime server.

The same server, template, limits and environment as a deployed replica, so "works on my laptop"
means the same thing as "works behind the gateway": every variable of
:func:`~hydro_serving.replica.environment.replica_environment` (what the function declares, the
store settings, the platform's) is set with the same value, over the user's own environment (this
is the user's process, not a stranger's: their shell's variables and store credentials stay
visible). Only the model comes from a local path when stack.yml says so.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from hydro_serving.replica import contract
from hydro_serving.replica.environment import replica_environment


def run_environment(spec: Any, stack_store: str | None, spec_path: Path,
                    operator: Mapping[str, str] | None = None) -> dict[str, str]:
    """What ``hydro run`` sets for ``spec``: the replica's environment, with the user's HOME and own credentials."""
    operator = dict(os.environ if operator is None else operator)
    credentials = {k: operator[k] for k in contract.REPLICA_CREDENTIAL_ENVS if operator.get(k)}
    return replica_environment(spec, operator=operator, home=operator.get("HOME"), tmpdir=operator.get("TMPDIR"),
                              store=operator.get(contract.STORE_ENV) or stack_store,
                              store_credentials=credentials, platform={contract.FUNCTION_SPEC_ENV: str(spec_path)})


def replica_concurrency(lang: str, workers: int | None, threads: int | None) -> tuple[int, int]:
    """Workers and threads as a deployed replica of ``lang`` gets them, unless the user said otherwise.

    ``hydro run`` used to serve with 1 worker while replicas ran 2, so a model measured on the
    laptop behaved unlike the deployed one; the runtime's own defaults decide for both now.
    """
    from hydro_serving.runtime.server import default_threads, default_workers
    from hydro_serving.templates import get_template

    if workers is None:
        workers = default_workers(get_template(lang))
    return workers, threads if threads is not None else default_threads(workers)


@click.command("run")
@click.argument("name")
@click.option("-f", "--file", "stack_file", default="stack.yml", show_default=True, type=click.Path(dir_okay=False),
              help="the stack file")
@click.option("--port", type=int, default=8080, show_default=True, help="port to listen on")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--workers", type=click.IntRange(min=1), default=None, envvar="HYDRO_WORKERS",
              help="worker processes (env HYDRO_WORKERS; default: what a deployed replica of the template runs, "
                   "2 for most models on 2+ CPUs, 1 for custom functions and routers)")
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="HYDRO_THREADS",
              help="threads per worker (env HYDRO_THREADS; default: 8 for one worker, 4 each for more)")
def run(name: str, stack_file: str, port: int, host: str, workers: int | None, threads: int | None) -> None:
    """Serve function NAME from the stack file locally, in the foreground (Ctrl-C stops it)."""
    from hydro_serving.runtime.server import LOAD_BEFORE_FORK_ENV, serve
    from hydro_serving.stack import load_stack

    stack = load_stack(stack_file)
    spec = stack.function(name).resolved(stack.root)
    workers, threads = replica_concurrency(spec.lang, workers, threads)
    with tempfile.TemporaryDirectory(prefix=f"hydro-run-{name}-") as tmp:
        spec_path = Path(tmp) / "function.json"
        spec_path.write_text(json.dumps(spec.to_dict(), indent=2))
        os.environ.update(run_environment(spec, stack.provider.store, spec_path))
        if stack.provider.trusted_keys and not os.environ.get("HYDRO_TRUSTED_KEYS"):  # model trust (store part)
            os.environ["HYDRO_TRUSTED_KEYS"] = ",".join(stack.provider.trusted_keys)
        # An interactive server answers at once (``/_/ready`` 503 while the model loads), so a slow load is
        # visible; a gateway's replicas load before fork, since the gateway only waits for ready anyway.
        os.environ.setdefault(LOAD_BEFORE_FORK_ENV, "0")
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}"
        click.echo(f"Serving function '{name}' (lang {spec.lang}, {workers} worker(s) x {threads} threads) at {url}/  "
                   f"(ready: {url}/_/ready, V2: {url}/v2/models/{name}/infer); Ctrl-C to stop", err=True)
        try:
            serve(spec, host, port, workers, threads, access_log=True)
        except SystemExit as exc:  # gunicorn exits the process on shutdown; a clean stop is not an error
            if exc.code not in (0, None):
                raise
