"""``hydro key create|list|revoke``: per-function API keys of a gateway (admin calls to ``/system/keys``).

Not to be confused with ``hydro keys`` (model signing keys). The key is printed once, on stdout
alone, so ``KEY=$(hydro key create ci --functions churn)`` works; the gateway keeps only its hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hydro_serving.cli.functions import _stack, admin_client, file_option, gateway_option, state_option


@click.group()
def key() -> None:
    """API keys for calling functions (on gateways run with --auth-functions, or functions with auth: key)."""


@key.command("create")
@click.argument("name")
@click.option("--functions", "functions", required=True, help="Comma-separated functions the key may call.")
@click.option("--expires", default=None, help="Lifetime, e.g. 30d, 12h, 15m, 2w (default: never).")
@file_option
@gateway_option
@state_option
def key_create(name: str, functions: str, expires: str | None, stack_file: Path | None, gateway_url: str | None,
               state: Path | None) -> None:
    """Create key NAME for --functions and print it (the only time it is shown)."""
    names = [fn.strip() for fn in functions.split(",") if fn.strip()]
    client = admin_client(gateway_url, state, _stack(stack_file, required=False))
    created = client.create_key(name, names, expires)
    until = f", expires {created['expiresAt']}" if created.get("expiresAt") else ""
    click.echo(f"key {created['name']} for {', '.join(created['functions'])}{until}; shown only now:", err=True)
    click.echo(created["key"])


@key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@file_option
@gateway_option
@state_option
def key_list(as_json: bool, stack_file: Path | None, gateway_url: str | None, state: Path | None) -> None:
    """List keys (names, scopes, status; never the keys themselves)."""
    keys = admin_client(gateway_url, state, _stack(stack_file, required=False)).keys()
    if as_json:
        click.echo(json.dumps(keys, indent=2))
        return
    click.echo(f"{'NAME':32} {'STATUS':8} {'EXPIRES':26} FUNCTIONS")
    for item in keys:
        name = item["name"] + (" (router)" if item.get("internal") else "")
        click.echo(f"{name:32} {item['status']:8} {item.get('expiresAt') or 'never':26} "
                   f"{','.join(item['functions'])}")


@key.command("revoke")
@click.argument("name")
@file_option
@gateway_option
@state_option
def key_revoke(name: str, stack_file: Path | None, gateway_url: str | None, state: Path | None) -> None:
    """Revoke key NAME: callers holding it get 401 from now on."""
    admin_client(gateway_url, state, _stack(stack_file, required=False)).revoke_key(name)
    click.echo(f"revoked key {name}")
