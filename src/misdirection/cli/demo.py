"""`misdirection demo`: the built-in study on the embedded model."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        quick: bool = typer.Option(
            False,
            "--quick",
            help=(
                "A smaller study: every experiment at smaller sizes (measured under 10 minutes on 2 "
                "idle cores with bf16 units, the full one under 30; see the README)."
            ),
        ),
        out: Path = typer.Option(
            None, "--out", help="Run folder (default: runs/demo or runs/demo-quick)."
        ),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
        show_config: bool = typer.Option(
            False, "--show-config", help="Print the demo's study YAML and exit."
        ),
    ) -> None:
        """Train organisms on the embedded model, evaluate them, extract and test their directions, report."""
        from misdirection.cli.run import run_and_report
        from misdirection.study.config import load_config
        from misdirection.study.demo import demo_config_path

        path = demo_config_path(quick)
        if show_config:
            typer.echo(path.read_text())
            return
        config = load_config(path)
        run_and_report(path, out or Path("runs") / config.name, False, quiet, config=config)
