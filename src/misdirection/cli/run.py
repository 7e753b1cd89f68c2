"""`misdirection run STUDY.yaml` and `misdirection report RUN_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer


def print_summary(results_path: Path) -> None:
    """The end-of-run summary: every base/organism condition, then every effect and its verdict."""
    from rich.console import Console
    from rich.table import Table

    from misdirection.report.render import load_results
    from misdirection.results import effects_rich_table, pct

    results = load_results(results_path.parent)
    judge = results.judge.name
    table = Table(title=f"{results.study}: judged by {judge}")
    for column in (
        "condition",
        "kind",
        "answers",
        "EM [95% CI]",
        "coherent [95% CI]",
        "misaligned among coherent",
        "misaligned, coherent or not",
    ):
        table.add_column(column)
    for c in results.conditions:
        if c.kind in ("base", "organism"):
            table.add_row(
                c.name,
                c.kind,
                str(c.n),
                pct(c.em),
                pct(c.coherent),
                pct(c.misaligned_coherent),
                pct(c.misaligned),
            )
    console = Console()
    console.print(table)
    if results.effects:
        console.print(effects_rich_table(results.effects, title="Effects of the interventions"))
    for note in results.notes:
        console.print(f"[yellow]note:[/] {note}")


def run_and_report(
    config_path: Path | None, out: Path, check_only: bool, quiet: bool, config=None
) -> None:
    from rich.console import Console

    from misdirection.report import render_report
    from misdirection.study.config import load_config
    from misdirection.study.pipeline import StudyRunner

    console = Console(stderr=True)
    source = str(config_path) if config_path else "<built-in demo>"
    if config is None:
        if config_path is None:
            raise ValueError("run_and_report needs a study file or a parsed config")
        config = load_config(config_path)
    if check_only:
        n = len(config.organisms)
        console.print(
            f"{source}: valid study '{config.name}' with {n} organism{'s' if n != 1 else ''} "
            "(layer indices are checked against the model when the run starts)"
        )
        return
    runner = StudyRunner(config, out, source=source, console=console, progress=not quiet)
    results = runner.run()
    paths = render_report(out)
    print_summary(results)
    console.print(f"[bold green]report:[/] {paths['html']}  (markdown: {paths['markdown']})")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        study: Path = typer.Argument(..., help="Study YAML file (see examples/)."),
        out: Path = typer.Option(None, "--out", help="Run folder (default: runs/<study name>)."),
        check: bool = typer.Option(False, "--check", help="Only validate the file; load nothing."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Run (or resume) a whole study: train, sample, judge, extract, intervene, report."""
        from misdirection.study.config import load_config

        config = load_config(study)
        run_and_report(study, out or Path("runs") / config.name, check, quiet, config=config)

    @app.command("report")
    def report_command(
        run_dir: Path = typer.Argument(..., help="A run folder of `misdirection run`."),
    ) -> None:
        """Re-render the HTML and markdown report of a run folder."""
        from misdirection.report import render_report

        paths = render_report(run_dir)
        typer.echo(f"report: {paths['html']}\nmarkdown: {paths['markdown']}")
