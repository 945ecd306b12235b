"""``hydro run NAME``: serve one function from stack.yml in the foreground, through the real runtime server.

The same server, template and limits as a deployed replica, so "works on my laptop" means the
same thing as "works behind the gateway"; only the model comes from a local path when stack.yml
says so.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from hydro_serving.errors import ConfigError


def _read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional ``export``), like docker's --env-file."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"environment_file {path}: {exc.strerror}", field="environment_file") from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.removeprefix("export ").partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"environment_file {path} line {number}: expected KEY=VALUE",
                              field="environment_file")
        values[key.strip()] = value.strip().strip("'\"")
    return values


@click.command("run")
@click.argument("name")
@click.option("-f", "--file", "stack_file", default="stack.yml", show_default=True, type=click.Path(dir_okay=False),
              help="the stack file")
@click.option("--port", type=int, default=8080, show_default=True, help="port to listen on")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--workers", type=int, default=1, show_default=True, help="worker processes")
@click.option("--threads", type=int, default=8, show_default=True, help="threads per worker")
def run(name: str, stack_file: str, port: int, host: str, workers: int, threads: int) -> None:
    """Serve function NAME from the stack file locally, in the foreground (Ctrl-C stops it)."""
    from hydro_serving.runtime.server import serve
    from hydro_serving.stack import load_stack

    stack = load_stack(stack_file)
    spec = stack.function(name).resolved(stack.root)
    for env_file in spec.environment_file:
        os.environ.update(_read_env_file(Path(env_file)))
    os.environ.update(spec.environment)
    if stack.provider.store and not os.environ.get("HYDRO_STORE"):
        os.environ["HYDRO_STORE"] = stack.provider.store
    if stack.provider.trusted_keys and not os.environ.get("HYDRO_TRUSTED_KEYS"):  # model trust (store part)
        os.environ["HYDRO_TRUSTED_KEYS"] = ",".join(stack.provider.trusted_keys)
    with tempfile.TemporaryDirectory(prefix=f"hydro-run-{name}-") as tmp:
        spec_path = Path(tmp) / "function.json"
        spec_path.write_text(json.dumps(spec.to_dict(), indent=2))
        os.environ["HYDRO_FUNCTION_SPEC"] = str(spec_path)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}"
        click.echo(f"Serving function '{name}' (lang {spec.lang}) at {url}/  "
                   f"(ready: {url}/_/ready, V2: {url}/v2/models/{name}/infer); Ctrl-C to stop", err=True)
        try:
            serve(spec, host, port, workers, threads, access_log=True)
        except SystemExit as exc:  # gunicorn exits the process on shutdown; a clean stop is not an error
            if exc.code not in (0, None):
                raise
