"""Command-line interface: a thin layer over the library.

Each submodule of this package owns one verb (or verb group) and exposes ``register(app)``.
Submodules are discovered automatically so that adding a verb never touches this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from misdirection.cli._app import typer_app
from misdirection.errors import MisdirectionError

app = typer_app(
    name="misdirection",
    help="Emergent-misalignment research toolkit: organisms, evaluation, directions, interventions.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    # An eager option's callback runs while parsing, before click asks for a command.
    if value:
        from misdirection import __version__

        typer.echo(f"misdirection {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    """Emergent-misalignment research toolkit: organisms, evaluation, directions, interventions."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except MisdirectionError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
