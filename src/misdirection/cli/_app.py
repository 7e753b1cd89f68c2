"""The one constructor of the CLI's Typer apps (the root and every verb group).

Not a verb: the CLI skips modules whose name starts with an underscore.
"""

from __future__ import annotations

from typing import Any

import typer


def typer_app(**kwargs: Any) -> typer.Typer:
    """A Typer app whose ``--help`` is click's plain layout instead of rich panels.

    Rich's option table shares the terminal width among six columns and truncates option names
    (``--scale-adapte…`` at 80 columns), so a user cannot read the option to type it. Click's
    layout never cuts a name: when a name is long its help moves to the next line.
    """
    kwargs.setdefault("no_args_is_help", True)
    # Click caps help at 80 columns; use a wider terminal when there is one (subcommands inherit).
    kwargs.setdefault("context_settings", {"max_content_width": 120})
    return typer.Typer(rich_markup_mode=None, **kwargs)
