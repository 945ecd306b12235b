"""``hydro monitor NAME`` (drift windows and the per-field table) and ``hydro feedback NAME`` (ground truth).

Thin: both call the gateway's ``/system/monitoring/<fn>`` and ``/system/feedback/<fn>`` and print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hydro_serving.cli.functions import _stack, admin_client, file_option, gateway_option, state_option
from hydro_serving.errors import ValidationError
from hydro_serving.gateway.client import error_from


def _get(client: Any, path: str) -> Any:
    response = client.request("GET", path, admin=True)
    if not response.ok:
        raise error_from(response, client.url + path)
    return response.json()


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (abs(value) < 1e-3 and value != 0):
        return f"{value:.2e}"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _table(fields: list[dict[str, Any]]) -> list[str]:
    lines = [f"  {'field':24} {'kind':12} {'test':15} {'score':>9} {'p-value':>9} {'threshold':>9}  "
             f"{'psi':>7}  drift"]
    for f in fields:
        psi = next((r["statistic"] for r in f["results"] if r["stat"] == "psi"), None)
        lines.append(f"  {f['field'][:24]:24} {f['kind']:12} {f['method']:15} {_num(f['score']):>9} "
                     f"{_num(f['p_value']):>9} {_num(f['threshold']):>9}  {_num(psi, 3):>7}  "
                     f"{'YES' if f['drifted'] else 'no'}")
    return lines


def render(view: dict[str, Any]) -> str:
    """The terminal view of ``GET /system/monitoring/<fn>``."""
    name, m = view["function"], view.get("monitoring")
    out = []
    if m is None:
        out.append(f"{name}: monitoring is off (add monitoring: {{sample: 0.1}} to the function in stack.yml)")
    else:
        w = m["window"]
        alert = f", alert {m['alert']}" if m.get("alert") else ""
        out.append(f"{name}: sample {m['sample']:g}, window {w['rows']} rows or {w['time']:g}s{alert}")
    wins = view["windows"]
    open_w = view.get("open_window")
    out.append(f"windows: {len(wins)} shown; open window: {open_w['rows'] if open_w else 0} rows; "
               f"rows stored {view['rows_stored']}; samples dropped {view['samples_dropped']}")
    if wins:
        out.append(f"  {'window':>6} {'rows':>6} {'unhealthy':>9}  {'drift':8} {'share':>6}  drifted fields / quality")
        for s in wins:
            status = "baseline" if s.get("baseline") and not s.get("drifted_fields") else (
                "DRIFT" if s["drift"] else "ok")
            q = s.get("quality") or {}
            quality = ""
            if q.get("task") == "classification":
                quality = f"  acc {q['accuracy']:.3f} prec {q['precision']:.3f} rec {q['recall']:.3f} (n={q['n']})"
            elif q.get("task") == "regression":
                quality = f"  mae {_num(q['mae'])} rmse {_num(q['rmse'])} (n={q['n']})"
            out.append(f"  {s['seq']:>6} {s['rows']:>6} {s['unhealthy']:>9}  {status:8} {s['drift_share']:>6.2f}  "
                       f"{', '.join(s.get('drifted_fields') or []) or '-'}{quality}")
    window = view.get("window")
    if window is None:
        out.append("no closed window yet")
        return "\n".join(out)
    ref = {"profile": "training profile", "window": "first window after deploy"}.get(window.get("reference"), "-")
    verdict = (f"DATASET DRIFT: {len(window['drifted_fields'])} of {len(window['fields'])} fields"
               if window["drift"] else f"no dataset drift ({len(window['drifted_fields'])} of "
               f"{len(window['fields'])} fields drifted)")
    out.append(f"window {window['seq']}: {window['rows']} rows vs {ref}; {verdict}; "
               f"alpha {window['alpha']:g} (Bonferroni: {_num(window['corrected_alpha'])})")
    if window["fields"]:
        out += _table(window["fields"])
    elif window.get("baseline_inputs"):
        out.append("  (this window is the inputs' reference: nothing to compare yet)")
    if window.get("outputs"):
        out.append("outputs vs the first window after deploy:")
        out += _table(window["outputs"])
    variants = window.get("variants")
    if variants:
        rows = ", ".join(f"{k} {v}" for k, v in variants["rows"].items())
        out.append(f"variants ({rows}):")
        for c in variants["comparisons"]:
            fields = ", ".join(f"{f['field']} {'differs' if f['drifted'] else 'same'}" for f in c["fields"])
            out.append(f"  {c['variant']} vs {c['against']}: {fields or '-'}")
    if view.get("unhealthy"):
        out.append("recent unhealthy rows:")
        for r in view["unhealthy"][:10]:
            checks = "; ".join(f"{f['field']} {f['check']}: {f['detail']}" for f in r["failures"])
            out.append(f"  {r['request_id'][:32]:32} row {r['row']}: {checks}")
    return "\n".join(out)


@click.command()
@click.argument("name")
@click.option("--window", type=click.IntRange(min=1), default=None, help="Show this window (default: the last).")
@click.option("--limit", type=click.IntRange(1, 500), default=10, show_default=True, help="Windows listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@file_option
@gateway_option
@state_option
def monitor(name: str, window: int | None, limit: int, as_json: bool, stack_file: Path | None,
            gateway_url: str | None, state: Path | None) -> None:
    """Drift of a function: its windows, and per field the test, score, p-value and threshold."""
    client = admin_client(gateway_url, state, _stack(stack_file, required=False))
    query = f"?limit={limit}" + (f"&window={window}" if window is not None else "")
    view = _get(client, f"/system/monitoring/{name}{query}")
    click.echo(json.dumps(view, indent=2) if as_json else render(view))


def _label(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.command()
@click.argument("name")
@click.option("--request-id", default=None, help="The X-Request-Id of the response the label belongs to.")
@click.option("--label", default=None, help="The true label (JSON: true, 1, 2.5, or any text).")
@click.option("--row", type=click.IntRange(min=0), default=0, show_default=True, help="The record's index.")
@click.option("--file", "from_file", type=click.File("rb"), default=None,
              help='JSON {"labels": [{"request_id", "label", "row"?}]} or JSON lines; "-" for stdin.')
@gateway_option
@state_option
def feedback(name: str, request_id: str | None, label: str | None, row: int, from_file: Any,
             gateway_url: str | None, state: Path | None) -> None:
    """Send ground truth for sampled predictions (joined by request id; quality shows in `hydro monitor`)."""
    if from_file is not None:
        raw = from_file.read()
        try:
            data = json.loads(raw)
        except ValueError:
            try:
                data = [json.loads(line) for line in raw.splitlines() if line.strip()]
            except ValueError:
                raise ValidationError("--file is neither JSON nor JSON lines", field="--file") from None
        body = data if isinstance(data, dict) else {"labels": data}
    elif request_id is not None and label is not None:
        body = {"labels": [{"request_id": request_id, "label": _label(label), "row": row}]}
    else:
        raise ValidationError("give --request-id and --label, or --file", field="--request-id")
    client = admin_client(gateway_url, state, None)
    path = f"/system/feedback/{name}"
    response = client.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"},
                              admin=True)
    if not response.ok:
        raise error_from(response, client.url + path)
    out = response.json()
    click.echo(f"{out['accepted']} label(s) stored for {name}, {out['matched']} joined to sampled predictions")
    if out["matched"] < out["accepted"]:
        print("the other labels are kept, but their requests were not sampled (or not yet decoded)",
              file=sys.stderr)
