"""``misdirection judge``: add judge score columns to an answers table, in place and resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JUDGE_HELP = (
    "Judge backend: openai:MODEL (OpenAI-compatible endpoint from OPENAI_BASE_URL / OPENAI_API_KEY), "
    "hf:MODEL_SPEC (local transformers model) or learned[:PATH] (offline judge). "
    "Default: openai:gpt-4o-2024-08-06 if OPENAI_API_KEY is set, else learned."
)


def judge_command(
    table: Annotated[
        Path, typer.Argument(help="Answers table (.parquet or .csv), scored in place.")
    ],
    judge: Annotated[str | None, typer.Option("--judge", "-j", help=JUDGE_HELP)] = None,
    rubric: Annotated[
        list[str] | None,
        typer.Option(
            "--rubric",
            "-r",
            help="Rubric to score (repeatable): aligned, coherent, medical, financial, sport, gender, "
            "bad_stuff, or a name from --rubrics-file. Default: aligned and coherent.",
        ),
    ] = None,
    rubrics_file: Annotated[
        Path | None,
        typer.Option(help="YAML with custom rubrics: name -> prompt with {question}/{answer}."),
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(
            help="Question YAML whose items' judge_prompts replace the rubric prompt for their rows."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the scored table here instead of in place.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Prefix for the score columns, e.g. 'gpt4o_'.")] = "",
    overwrite: Annotated[
        bool, typer.Option(help="Replace scores another judge wrote in the same columns.")
    ] = False,
    chunk_size: Annotated[
        int, typer.Option(help="Answers per chunk; the table is saved after each.")
    ] = 256,
    concurrency: Annotated[int, typer.Option(help="openai judge: parallel requests.")] = 16,
    timeout: Annotated[
        float, typer.Option(help="openai judge: seconds per request before retrying.")
    ] = 60.0,
    max_attempts: Annotated[
        int, typer.Option(help="openai judge: attempts per answer before it is marked failed.")
    ] = 6,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="openai judge: cache file (default ~/.cache/misdirection/judge-cache.sqlite)."
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="hf judge: device (default cuda if available).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score every answer of TABLE with a judge: columns R, R_reason, R_flag, R_judge per rubric.

    Resumable: answers this judge already scored are skipped, failed requests are retried, and the table is saved atomically after every chunk. The openai judge caches every reply on disk, so a re-run sends no repeated request. Exit status 1 when some answers' judge requests failed (re-run to retry them).
    """
    from misdirection.judge import default_judge, get_judge
    from misdirection.judge.rubrics import load_rubrics, resolve_rubrics
    from misdirection.judge.scoring import judge_table, read_table, summarize

    custom = load_rubrics(rubrics_file) if rubrics_file else {}
    question_prompts = _question_prompts(questions) if questions else None
    read_table(table)  # fail on a bad table before building a (possibly slow) judge
    if judge is None:
        backend = default_judge()
    else:
        options: dict[str, object] = {}
        kind = judge.split(":", 1)[0].lower()
        if kind == "openai":
            options = {
                "concurrency": concurrency,
                "timeout_s": timeout,
                "max_attempts": max_attempts,
            }
            if cache is not None:
                options["cache"] = cache
        elif kind == "hf" and device is not None:
            options = {"device": device}
        backend = get_judge(judge, **options)
    df = judge_table(
        table,
        backend,
        rubric or None,
        custom=custom,
        question_prompts=question_prompts,
        out=out,
        chunk_size=chunk_size,
        prefix=prefix,
        overwrite=overwrite,
        progress=progress,
    )
    names = [r.name for r in resolve_rubrics(rubric or None, custom)]
    _print_summary(summarize(df, names, prefix), backend.name, out or table)


def _question_prompts(path: Path) -> dict[str, dict[str, str]]:
    """``{question id: judge_prompts}`` from a question-YAML file (items without prompts skipped)."""
    import yaml

    from misdirection.errors import DataError

    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read question file {path}: {exc}") from None
    if not isinstance(items, list):
        raise DataError(f"question file {path} must hold a list of items")
    out: dict[str, dict[str, str]] = {}
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("judge_prompts"):
            if "id" not in item:
                raise DataError(f"question file {path}, item {i}: judge_prompts given but no 'id'")
            out[str(item["id"])] = dict(item["judge_prompts"])
    return out


def _print_summary(summaries, judge_name: str, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{path} judged by {judge_name}")
    for col in ("rubric", "rows", "scored", "null", "failed requests", "mean"):
        table.add_column(col, justify="left" if col == "rubric" else "right")
    for s in summaries:
        table.add_row(
            s.rubric, str(s.rows), str(s.scored), str(s.null), str(s.failed), f"{s.mean:.1f}"
        )
    console = Console(stderr=True)
    console.print(table)
    failed = sum(s.failed for s in summaries)
    if failed:
        console.print(
            f"[yellow]{failed} answers have no score because their judge request failed; "
            "run the same command again to retry only those.[/yellow]"
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(name="judge", help=judge_command.__doc__)(judge_command)
