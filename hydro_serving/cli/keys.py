"""`hydro keys`: ed25519 key pairs for signing model manifests (thin: the work is in hydro_serving.store.trust)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def keys() -> None:
    """Signing keys for models: generate a pair, then `hydro model upload --sign KEY` or `hydro model sign`."""


@keys.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder for hydro-signing.key (private, 0600) and hydro-signing.pub.")
def generate(out_dir: Path) -> None:
    """Write a new ed25519 key pair; never overwrites an existing one."""
    from hydro_serving.store.trust import generate_keys

    private, public, kid = generate_keys(out_dir)
    click.echo(f"private key: {private} (mode 0600; keep it secret, sign with: hydro model upload --sign {private})")
    click.echo(f"public key:  {public} (key id {kid})")
    click.echo(f"trust it:    export HYDRO_TRUSTED_KEYS={public.read_text().strip()}")
