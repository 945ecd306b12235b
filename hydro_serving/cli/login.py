"""``hydro login URL`` / ``hydro logout [URL]``: admin tokens kept per gateway, sent only there.

The token is checked against the gateway before it is saved (``GET /system/info``), so a typo
or a wrong URL is caught now rather than at the next deploy. It is read from stdin
(``--token-stdin``, for scripts) or asked for without echo, never taken as an argument (shell
history, ``ps``).
"""

from __future__ import annotations

import sys

import click

from hydro_serving.cli.credentials import config_dir, normalize, remove_login, resolve_target, save_login
from hydro_serving.errors import ConfigError
from hydro_serving.gateway.client import GatewayClient


@click.command()
@click.argument("url")
@click.option("--token-stdin", is_flag=True, help="Read the token from stdin (else it is asked for, not echoed).")
def login(url: str, token_stdin: bool) -> None:
    """Keep the admin token of the gateway at URL (0600, in the user's config directory)."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("the gateway URL must start with http:// or https://", param_hint="URL")
    if token_stdin:
        token = sys.stdin.readline().strip()
    else:
        token = click.prompt(f"admin token of {url}", hide_input=True).strip()
    if not token:
        raise ConfigError("the token is empty")
    GatewayClient(url, token).info()  # 401 -> "refused the credentials"; nothing is saved
    path = save_login(url, token)
    click.echo(f"logged in to {normalize(url)} (token kept in {path})")


@click.command()
@click.argument("url", required=False)
def logout(url: str | None) -> None:
    """Forget the token kept for URL (default: HYDRO_GATEWAY, else http://127.0.0.1:8080)."""
    target = url or resolve_target(None).url
    if remove_login(target):
        click.echo(f"logged out of {normalize(target)}")
    else:
        click.echo(f"no login for {normalize(target)} in {config_dir()}")
