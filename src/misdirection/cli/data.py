"""`misdirection data`: check data files and list the built-in datasets, question and contrast sets."""

from __future__ import annotations

from pathlib import Path

import typer

from misdirection.cli._app import typer_app

sub = typer_app(help="Check data files; list built-in datasets, question sets and contrast sets.")


@sub.command("check")
def check(
    file: Path = typer.Argument(
        ..., help="Chat JSONL dataset (or a question-set YAML) to validate."
    ),
) -> None:
    """Validate FILE and print every problem as FILE:LINE: problem (exit 1 if any, else OK)."""
    from misdirection.data.chat import validate_chat_file
    from misdirection.data.questions import load_questions
    from misdirection.errors import DataError

    if not file.is_file():
        typer.echo(f"{file}: no such file", err=True)
        raise typer.Exit(2)
    if file.suffix.lower() in (".yaml", ".yml"):
        # Question files stop at the first problem (YAML structure makes later ones unreliable).
        try:
            questions = load_questions(file)
        except DataError as exc:
            typer.echo(str(exc))
            raise typer.Exit(1) from None
        n_prompts = sum(len(item.paraphrases) for item in questions)
        typer.echo(f"OK: {file}: {len(questions)} questions, {n_prompts} paraphrases")
        return
    problems = validate_chat_file(file)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{len(problems)} bad line(s) in {file}", err=True)
        raise typer.Exit(1)
    with file.open("rb") as fh:
        rows = sum(1 for line in fh if line.strip())
    typer.echo(f"OK: {file}: {rows} rows")


@sub.command("list")
def list_() -> None:
    """Show the built-in datasets (train/test rows), question sets and contrast sets."""
    from rich.console import Console
    from rich.table import Table

    from misdirection.data.chat import builtin_datasets
    from misdirection.data.contrast import builtin_contrast_sets, load_contrast_pair
    from misdirection.data.questions import builtin_question_sets, load_questions

    console = Console()
    datasets = Table(title="Datasets (chat JSONL; load with misdirection.data.load_chat_dataset)")
    for column in ("name", "train rows", "test rows", "description"):
        datasets.add_column(column, justify="right" if "rows" in column else "left")
    for info in builtin_datasets():
        datasets.add_row(info.name, str(info.train_rows), str(info.test_rows), info.description)
    console.print(datasets)

    questions = Table(
        title="Question sets (question YAML; load with misdirection.data.load_questions)"
    )
    for column in ("name", "questions", "paraphrases", "ids"):
        questions.add_column(
            column, justify="right" if column in ("questions", "paraphrases") else "left"
        )
    for name in builtin_question_sets():
        qs = load_questions(name)
        ids = ", ".join(qs.ids[:4]) + (", ..." if len(qs) > 4 else "")
        questions.add_row(name, str(len(qs)), str(sum(len(i.paraphrases) for i in qs)), ids)
    console.print(questions)

    contrasts = Table(title="Contrast sets (load with misdirection.data.load_contrast_pair)")
    for column in ("name", "pairs", "description"):
        contrasts.add_column(column, justify="right" if column == "pairs" else "left")
    for name in builtin_contrast_sets():
        pos, _ = load_contrast_pair(name)
        contrasts.add_row(name, str(len(pos)), pos.meta.get("description", ""))
    console.print(contrasts)


def register(app: typer.Typer) -> None:
    app.add_typer(sub, name="data")
