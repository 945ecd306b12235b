"""`hydro model`: the model store from the command line (thin: every decision is in hydro_serving.store).

Errors are HydroErrors, which ``hydro_serving.cli.main`` prints as one line with exit status 1.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from hydro_serving.errors import ValidationError


def _store(ctx: click.Context) -> Any:
    from hydro_serving.store import open_store

    return open_store(ctx.obj.get("store") if ctx.obj else None)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@contextlib.contextmanager
def _progress(total: int, what: str) -> Iterator[Any]:
    """A tqdm bar on a terminal; nothing when output is piped (logs, CI)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, leave=False) as bar:
        yield lambda _path, n: bar.update(n)


def _parse_meta(items: tuple[str, ...]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--meta expects key=value, got {item!r}", field="meta")
        meta[key.strip()] = value
    return meta


@click.group()
@click.option("--store", envvar="HYDRO_STORE", default=None, metavar="URL",
              help="s3://bucket[/prefix] or file:///dir (default: $HYDRO_STORE, else the user data dir).")
@click.pass_context
def model(ctx: click.Context, store: str | None) -> None:
    """Versioned models in S3-compatible storage: upload, list, alias, pull, discover."""
    ctx.ensure_object(dict)
    ctx.obj["store"] = store


@model.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name: a-z, 0-9, '_' and '-', up to 63 characters.")
@click.option("--framework", default=None, help="Override the detected framework.")
@click.option("--signature", "signature_file", type=click.Path(path_type=Path), default=None,
              help="YAML/JSON file with inputs and outputs (Hydrosphere contracts accepted).")
@click.option("--training-data", type=click.Path(path_type=Path), default=None,
              help="CSV of the training data, profiled into the manifest.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Free metadata; repeatable.")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="KEY",
              help="Sign the manifest with this ed25519 private key (hydro keys generate).")
@click.pass_context
def upload(ctx: click.Context, path: Path, name: str, framework: str | None, signature_file: Path | None,
           training_data: Path | None, meta: tuple[str, ...], sign_key: Path | None) -> None:
    """Upload PATH (a file or a directory) as the next version of NAME; prints NAME:VERSION."""
    from hydro_serving.store.trust import PICKLE_SUFFIXES, SigningKey

    metadata = _parse_meta(meta)
    key = SigningKey.load(sign_key) if sign_key is not None else None  # a bad key fails before any upload
    store = _store(ctx)
    files = ([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]) if path.exists() else []
    total = sum(p.stat().st_size for p in files)
    pickles = [p.name for p in files if p.name.lower().endswith(PICKLE_SUFFIXES)]
    with _progress(total, f"uploading {name}") as progress:
        try:
            manifest = store.upload(path, name, framework=framework, signature=signature_file,
                                    training_data=training_data, metadata=metadata, progress=progress, sign_key=key)
        except ValidationError as exc:
            if exc.field != "training_data":
                raise
            raise ValidationError(f"--training-data: {exc.message}", field="--training-data") from None
    if pickles:
        click.echo(f"note: {', '.join(pickles[:3])} is pickle, and loading pickle runs code: whoever can write it "
                   "can run anything where it is loaded. "
                   + ("It is signed with your key; gateways that trust the key will load it."
                      if key is not None else
                      "Sign it (hydro keys generate; hydro model upload --sign KEY, or hydro model sign "
                      "NAME:VERSION --key KEY) so servers with HYDRO_TRUSTED_KEYS accept it, or convert it to a "
                      "safe format (skops, ONNX)."), err=True)
    click.echo(manifest.ref)


@model.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The ed25519 private key (hydro keys generate).")
@click.pass_context
def sign(ctx: click.Context, ref: str, key_path: Path) -> None:
    """Sign an existing version's manifest (replaces an earlier signature)."""
    from hydro_serving.store.refs import parse_pinned
    from hydro_serving.store.trust import SigningKey

    name, version = parse_pinned(ref)
    key = SigningKey.load(key_path)
    manifest = _store(ctx).sign(f"{name}:{version}", key)
    click.echo(f"signed {manifest.ref} with key {key.key_id}")


@model.command("list")
@click.pass_context
def list_models(ctx: click.Context) -> None:
    """Model names with at least one version."""
    for name in _store(ctx).list_models():
        click.echo(name)


@model.command()
@click.argument("name")
@click.pass_context
def versions(ctx: click.Context, name: str) -> None:
    """Versions of NAME with framework, size, creation time and aliases."""
    store = _store(ctx)
    by_version: dict[int, list[str]] = {}
    for alias, version in store.aliases(name).items():
        by_version.setdefault(version, []).append(alias)
    numbers = store.versions(name)
    by_version.setdefault(numbers[-1], []).insert(0, "latest")
    from hydro_serving.errors import StoreError

    for version in numbers:
        aliases = ",".join(by_version.get(version, []))
        try:
            m = store.get_manifest(f"{name}:{version}")
        except StoreError as exc:  # one damaged version must not hide the others
            click.echo(f"{name}:{version}\tdamaged: {exc.message} (hydro model rm {name}:{version})")
            continue
        click.echo(f"{m.ref}\t{m.framework or '-'}\t{_size(m.total_size)}\t{m.created_at}\t{aliases}".rstrip())


@model.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show the manifest of NAME[:VERSION|ALIAS]."""
    store = _store(ctx)
    m = store.get_manifest(ref)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    click.echo(f"model:      {m.ref}")
    sig = store.get_signature(m.name, m.version)
    try:
        signer = f"key {json.loads(sig)['key_id']}" if sig is not None else "unsigned"
    except (ValueError, KeyError, TypeError):
        signer = "a damaged manifest.sig"
    click.echo(f"signed by:  {signer}")
    click.echo(f"framework:  {m.framework or '-'}")
    if m.framework_versions:  # what trained it: builds pin these, replicas warn when theirs differ
        click.echo("trained with: " + ", ".join(f"{p} {v}" for p, v in sorted(m.framework_versions.items())))
    click.echo(f"created:    {m.created_at} ({m.origin})")
    click.echo(f"files:      {len(m.files)} ({_size(m.total_size)})")
    for f in m.files:
        click.echo(f"  {f.path}  {_size(f.size)}  sha256:{f.sha256}")
    if m.signature is not None:
        click.echo("signature:")
        for kind, fields in (("in ", m.signature.inputs), ("out", m.signature.outputs)):
            for fld in fields:
                shape = "any" if fld.shape is None else list(fld.shape)
                click.echo(f"  {kind} {fld.name}: {fld.dtype} {shape}" + (" nullable" if fld.nullable else ""))
    if m.metadata:
        click.echo("metadata:")
        for key, value in m.metadata.items():
            click.echo(f"  {key}: {value}")
    if m.training_profile:
        prof = m.training_profile
        click.echo(f"training data: {prof.get('source')} ({prof.get('rows')} rows)")
        for col in prof.get("columns", []):
            if col.get("type") in ("integer", "float"):
                detail = f"min {col['min']:g} max {col['max']:g} mean {col['mean']:g} std {col['std']:g}"
            else:
                top = ", ".join(str(t["value"]) for t in col.get("top", [])[:3])
                detail = f"{col.get('unique', 0)} distinct; top: {top}"
            click.echo(f"  {col['name']}: {col['type']}, {col['count']} values, {col['missing']} missing; {detail}")


@model.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.argument("alias")
@click.pass_context
def alias(ctx: click.Context, ref: str, alias: str) -> None:
    """Point ALIAS (production, staging, ...) at NAME:VERSION."""
    from hydro_serving.store.refs import parse_pinned

    name, version = parse_pinned(ref)
    _store(ctx).set_alias(name, version, alias)
    click.echo(f"{name}:{alias} -> {name}:{version}")


@model.command()
@click.argument("ref", metavar="NAME[:REF]")
@click.argument("dest", type=click.Path(path_type=Path))
@click.pass_context
def pull(ctx: click.Context, ref: str, dest: Path) -> None:
    """Download a version into DEST, every file checked against its sha256."""
    store = _store(ctx)
    manifest = store.get_manifest(ref)
    with _progress(manifest.total_size, f"pulling {manifest.ref}") as progress:
        store.pull(manifest.ref, dest, progress=progress)
    click.echo(f"{manifest.ref} -> {dest}")


def _deployed_pins(gateway_url: str | None, state: Path | None) -> tuple[dict[str, str] | None, str]:
    """Function -> pin of every function deployed on the configured gateway; (None, why) when none answers."""
    from hydro_serving.cli.functions import admin_client
    from hydro_serving.errors import HydroError
    from hydro_serving.store.trust import PIN_ANNOTATION

    try:
        client = admin_client(gateway_url, state, None)
        functions = client.list_functions()
    except HydroError as exc:
        return None, exc.message
    pins: dict[str, str] = {}
    for fn in functions if isinstance(functions, list) else []:
        pin = fn.get("modelPin") or (fn.get("annotations") or {}).get(PIN_ANNOTATION)
        if isinstance(pin, str) and isinstance(fn.get("name"), str):
            pins[fn["name"]] = pin
    return pins, client.url


@model.command("rm")
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--force", is_flag=True, help="Remove even if an alias points at it (the alias goes too) or a "
              "deployed function pins it.")
@click.option("--gateway", "gateway_url", default=None, help="Gateway whose deployed functions' pins protect "
              "versions (else HYDRO_GATEWAY, else http://127.0.0.1:8080).")
@click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The gateway's state directory, where its credentials are (else HYDRO_STATE).")
@click.pass_context
def remove(ctx: click.Context, ref: str, force: bool, gateway_url: str | None, state: Path | None) -> None:
    """Delete one version (its number is never reused); refuses an aliased or pinned version without --force."""
    from hydro_serving.store.refs import parse_pinned

    name, version = parse_pinned(ref)
    pins, where = _deployed_pins(gateway_url, state)
    aliases = _store(ctx).remove(name, version, force=force, pinned_by=pins)
    if pins is None:
        click.echo(f"note: pins of deployed functions were not checked: {where}", err=True)
    click.echo(f"removed {name}:{version}" + (f" and its alias(es) {', '.join(aliases)}" if aliases else ""))


@model.command()
@click.option("--min-age", type=float, default=0.0, show_default=True,
              help="A group of files becomes a version only once two scans at least this many seconds apart "
                   "saw it unchanged (0: two scans in this run).")
@click.option("--unsafe-formats", is_flag=True, help="Also adopt pickle-based files (joblib, pickle): they are "
              "code, and whoever dropped them can run anything where they are loaded.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def discover(ctx: click.Context, min_age: float, unsafe_formats: bool, as_json: bool) -> None:
    """Turn finished uploads put under models/<name>/ by other S3 clients into versions."""
    report = _store(ctx).discover(min_age=min_age, allow_unsafe=unsafe_formats)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for m in report.added:
        click.echo(f"added {m.ref} ({m.framework}) from {', '.join(m.metadata.get('discovered_from', []))}")
    for group in report.unservable:
        click.echo(f"not served: {', '.join(group.keys)}: {group.reason}")
    for ref in report.incomplete:
        click.echo(f"incomplete upload (invisible): {ref}")
    for note in report.skipped:
        click.echo(f"skipped: {note}")
    if not (report.added or report.unservable or report.incomplete or report.skipped):
        click.echo("nothing to discover")
