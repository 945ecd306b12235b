"""Entry point of the `hydro` command.

Subcommands are imported lazily (``name -> "module:attribute"``) so that `hydro --help` and
light commands never pay for boto3, docker or a framework import, and so that each command
module stays owned by one part of the code base.
"""

from __future__ import annotations

import importlib
import sys

import click

from hydro_serving import __version__
from hydro_serving.errors import HydroError

COMMANDS: dict[str, str] = {
    # builder / runtime (foundation)
    "new": "hydro_serving.cli.build:new",
    "build": "hydro_serving.cli.build:build",
    "push": "hydro_serving.cli.build:push",
    "templates": "hydro_serving.cli.build:templates",
    "run": "hydro_serving.cli.run:run",
    "render": "hydro_serving.cli.render:render",
    # model store
    "model": "hydro_serving.cli.model:model",
    "keys": "hydro_serving.cli.keys:keys",
    # gateway and functions
    "gateway": "hydro_serving.cli.gateway:gateway",
    "down": "hydro_serving.cli.gateway:down",
    "deploy": "hydro_serving.cli.functions:deploy",
    "up": "hydro_serving.cli.functions:up",
    "list": "hydro_serving.cli.functions:list_functions",
    "describe": "hydro_serving.cli.functions:describe",
    "invoke": "hydro_serving.cli.functions:invoke",
    "async": "hydro_serving.cli.asyncs:async_",
    "remove": "hydro_serving.cli.functions:remove",
    "logs": "hydro_serving.cli.functions:logs",
    "secret": "hydro_serving.cli.functions:secret",
    # credentials: logins per gateway, API keys for functions
    "login": "hydro_serving.cli.login:login",
    "logout": "hydro_serving.cli.login:logout",
    "key": "hydro_serving.cli.apikeys:key",
    # Kafka streaming pipelines
    "stream": "hydro_serving.cli.stream:stream",
    # monitoring
    "monitor": "hydro_serving.cli.monitor:monitor",
    "feedback": "hydro_serving.cli.monitor:feedback",
    # the demo
    "demo": "hydro_serving.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # the command is not built yet
                return None
            raise
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hydro")
def cli() -> None:
    """Hydro Serving: models as functions, pipelines as routers, scaled to zero."""


def error_line(exc: HydroError) -> str:
    """The one line the CLI prints for ``exc``: its message, plus the field only when that adds something.

    A stack error already starts with its key path (``functions.f1.scael: unknown key … (line 7)``),
    and pseudo-fields such as ``(yaml)`` or ``(top level)`` are for API callers, not for a reader:
    repeating either at the end (``((yaml))``) is noise.
    """
    field = exc.field
    if not field or field in exc.message or (field.startswith("(") and field.endswith(")")):
        return exc.message
    return f"{exc.message} ({field})"


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a HydroError becomes one line on stderr and exit status 1, never a traceback."""
    try:
        cli.main(args=argv, prog_name="hydro", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HydroError as exc:
        click.echo(f"error: {error_line(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
