"""``hydro async list|show|redrive|purge``: the gateway's async calls and its dead-letter queue (admin).

Thin over ``/system/async``: what a call is and how it moves between states is the gateway's
(:mod:`hydro_serving.gateway.asyncq`); this module only formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click

from hydro_serving.cli.functions import _stack, admin_client, file_option, gateway_option, state_option
from hydro_serving.errors import ValidationError

STATUSES = ("queued", "running", "succeeded", "failed", "dead")


def _client(stack_file: Path | None, gateway_url: str | None, state: Path | None) -> Any:
    return admin_client(gateway_url, state, _stack(stack_file, required=False))


def _query(**params: Any) -> str:
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return f"?{urlencode(kept)}" if kept else ""


@click.group("async")
def async_() -> None:
    """Async invocations (POST /async-function/<name>): list, show, redrive and purge dead letters."""


@async_.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only calls in this state (dead: the DLQ).")
@click.option("--function", "function", default=None, help="Only calls of this function.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@file_option
@gateway_option
@state_option
def async_list(status: str | None, function: str | None, limit: int, as_json: bool, stack_file: Path | None,
               gateway_url: str | None, state: Path | None) -> None:
    """List async calls, newest first (without their bodies)."""
    calls = _client(stack_file, gateway_url, state)._admin(
        "GET", "/system/async" + _query(status=status, function=function, limit=limit)).json()
    if as_json:
        click.echo(json.dumps(calls, indent=2))
        return
    click.echo(f"{'CALL ID':36}  {'FUNCTION':20} {'STATUS':9} {'TRIES':>5} {'HTTP':>4}  SUBMITTED")
    for c in calls:
        click.echo(f"{c['callId']:36}  {c['function']:20} {c['status']:9} {c['attempts']:>5} "
                   f"{c['responseStatus'] or '-':>4}  {c['submittedAt']}")


@async_.command("show")
@click.argument("call_id")
@file_option
@gateway_option
@state_option
def async_show(call_id: str, stack_file: Path | None, gateway_url: str | None, state: Path | None) -> None:
    """Show one call: status, attempts, timings, the kept response and its callback."""
    call = _client(stack_file, gateway_url, state)._admin("GET", f"/system/async/{quote(call_id, safe='')}").json()
    click.echo(json.dumps(call, indent=2))


@async_.command("redrive")
@click.argument("call_id", required=False)
@click.option("--all", "all_dead", is_flag=True, help="Every dead call (of --function, if given).")
@click.option("--function", "function", default=None, help="With --all: only this function's dead calls.")
@file_option
@gateway_option
@state_option
def async_redrive(call_id: str | None, all_dead: bool, function: str | None, stack_file: Path | None,
                  gateway_url: str | None, state: Path | None) -> None:
    """Run a dead (or failed) call again from its first attempt; --all for the whole dead-letter queue."""
    if bool(call_id) == all_dead:
        raise ValidationError("give one CALL_ID or --all", field="call_id")
    client = _client(stack_file, gateway_url, state)
    if all_dead:
        out = client._admin("POST", "/system/async/dead/redrive" + _query(function=function)).json()
    else:
        out = client._admin("POST", f"/system/async/{quote(call_id or '', safe='')}/redrive").json()
    click.echo(f"redriven {out['redriven']} call(s)")
    for cid in out["callIds"]:
        click.echo(cid)


@async_.command("purge")
@click.argument("call_id", required=False)
@click.option("--status", type=click.Choice(("dead", "failed", "succeeded")), default="dead", show_default=True,
              help="Without CALL_ID: forget every finished call of this state.")
@click.option("--function", "function", default=None, help="Without CALL_ID: only this function's calls.")
@file_option
@gateway_option
@state_option
def async_purge(call_id: str | None, status: str, function: str | None, stack_file: Path | None,
                gateway_url: str | None, state: Path | None) -> None:
    """Forget finished calls: one CALL_ID, or all dead (--status) ones; queued and running calls are kept."""
    client = _client(stack_file, gateway_url, state)
    if call_id:
        out = client._admin("DELETE", f"/system/async/{quote(call_id, safe='')}").json()
    else:
        out = client._admin("DELETE", "/system/async" + _query(status=status, function=function)).json()
    click.echo(f"purged {out['purged']} call(s)")
