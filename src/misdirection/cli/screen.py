"""`misdirection screen`: rank training rows by how far they push along a direction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from misdirection.cli._shared import ModelOpt


def register(app: typer.Typer) -> None:
    @app.command("screen")
    def screen_command(
        data: Annotated[
            str, typer.Option("--data", help="Training dataset to screen (name or chat JSONL).")
        ],
        directions: Annotated[
            Path, typer.Option("--directions", "-d", help="Direction file (one row per layer).")
        ],
        model: ModelOpt = "smollm2-135m",
        layer: Annotated[
            int | None, typer.Option("--layer", help="Layer read (default: the middle one).")
        ] = None,
        rows: Annotated[
            int | None,
            typer.Option("--rows", min=1, help="Screen the first N rows (default: all)."),
        ] = None,
        benign: Annotated[
            str | None,
            typer.Option(
                "--benign",
                help="A dataset of benign rows mixed in (as many as screened) to measure how well "
                "the score ranks --data rows above them (AUROC).",
            ),
        ] = None,
        max_new_tokens: Annotated[
            int,
            typer.Option(
                "--max-new-tokens", "-t", min=1, help="Length of the base model's own answers."
            ),
        ] = 48,
        top: Annotated[int, typer.Option("--top", min=1, help="Rows shown at each end.")] = 5,
        out: Annotated[Path, typer.Option("--out", "-o", help="CSV of every row, ranked.")] = Path(
            "screening.csv"
        ),
    ) -> None:
        """Score each training row: its answer's projection on the direction minus the base model's own answer's.

        Both are read through the base model at one layer; the base model answers each row's prompt
        greedily. Rows are ranked highest first (the rows that push training furthest along the
        direction); the top and bottom rows and the dataset mean are printed, every row goes to OUT.
        """
        from rich.console import Console
        from rich.table import Table

        from misdirection.data.chat import load_chat_dataset
        from misdirection.directions import DirectionSet
        from misdirection.model_shape import check_layers, model_shape
        from misdirection.models import load_model
        from misdirection.training_time.defence import check_direction_fits
        from misdirection.training_time.screening import screen_rows

        ds = DirectionSet.load(directions)
        shape = model_shape(model)  # a direction or layer that cannot fit fails before loading
        check_layers(model, {"--layer": [] if layer is None else [layer]}, shape)
        if shape is not None:
            check_direction_fits(ds, shape.n_layers, shape.d_model, None, "--directions")
        screened = list(load_chat_dataset(data, "train").rows)[:rows]
        labels = [data] * len(screened)
        if benign is not None:
            extra = list(load_chat_dataset(benign, "train").rows)[: len(screened)]
            screened += extra
            labels += [benign] * len(extra)
        lm = load_model(model)
        result = screen_rows(
            lm, screened, ds, layer=layer, labels=labels,
            positive_label=data if benign is not None else None,
            max_new_tokens=max_new_tokens, dataset=data, progress=True,
        )  # fmt: skip
        console = Console()
        table = Table(title=f"{data}: rows ranked by projection difference (layer {result.layer})")
        for col in ("rank", "score", "label", "prompt", "answer"):
            table.add_column(col)
        n = len(result.rows)
        for k, r in [(i + 1, r) for i, r in enumerate(result.top(top))] + [
            (n - i, r) for i, r in enumerate(result.bottom(top))
        ]:
            table.add_row(str(k), f"{r.score:+.3f}", r.label or "", r.prompt[:70], r.answer[:90])
        console.print(table)
        console.print(
            f"dataset mean score {result.mean_score:+.4f} ± {result.score_se:.4f} (SE), {n} rows"
        )
        if result.auroc is not None:
            console.print(f"AUROC ({data} above {benign}): {result.auroc:.3f} (0.5 = chance)")
        result.table().to_csv(out, index=False)
        console.print(f"every row saved to {out}")
