"""`misdirection select-layer`: sweep layers x scales of a direction file and choose where to steer."""

from __future__ import annotations

from pathlib import Path

import typer

from misdirection.cli._shared import AdapterOpt, DeviceOpt, DtypeOpt, ForwardBatchOpt, ModelOpt


def _numbers(text: str, what: str, cast: type) -> list:
    from misdirection.errors import ConfigError

    try:
        values = [cast(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(
            f"{what} must be a comma-separated list of numbers, e.g. 6,12,18; got {text!r}"
        ) from None
    if not values:
        raise ConfigError(f"{what} is empty")
    return values


def register(app: typer.Typer) -> None:
    @app.command("select-layer")
    def select_layer_command(
        directions: Path = typer.Argument(
            ...,
            help="Direction file (.safetensors, .pt or .npy): one row per layer, or a single vector.",
            show_default=False,
        ),
        model: ModelOpt = "smollm2-135m",
        adapter: AdapterOpt = [],  # noqa: B006 - typer needs a literal default
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output folder: sweep.csv, sweep.png, chosen.json."
        ),
        layers: str = typer.Option(
            None,
            "--layers",
            help="Candidate layers, comma-separated, or 'all' (default: every third layer, "
            "which keeps a CPU run to minutes; refine around the chosen one).",
        ),
        scales: str = typer.Option("4,8", "--scales", help="Steering scales, comma-separated."),
        normalize: bool = typer.Option(
            False,
            "--normalize",
            help="Steer with unit rows (scales in residual-norm units) and write directions.unit.safetensors.",
        ),
        target: str = typer.Option(
            "em-answers",
            "--target",
            help="Target-set YAML (items of question/target/anti) or built-in name.",
        ),
        n_pairs: int = typer.Option(
            None, "--n-pairs", help="Use a seeded subsample of this many pairs."
        ),
        judge: str = typer.Option(
            None,
            "--judge",
            help="Also judge sampled answers per cell (judge spec, e.g. openai:gpt-4o).",
        ),
        questions: str = typer.Option(
            "core", "--questions", help="Question set for the judged EM share."
        ),
        n_per_question: int = typer.Option(
            4, "--n-per-question", help="Answers per paraphrase per cell when judging."
        ),
        max_new_tokens: int = typer.Option(
            64, "--max-new-tokens", help="Answer length when judging."
        ),
        seed: int = typer.Option(
            0, "--seed", help="Seed of the pair subsample and of judged sampling."
        ),
        batch_size: ForwardBatchOpt = 8,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
    ) -> None:
        """Steer at each candidate layer and scale; score the shift of log p(misaligned answer) -
        log p(aligned answer) (teacher forced, judge-free) and optionally the judged EM share;
        write the evidence table, a plot and the chosen layer (chosen.json).
        """
        from rich.console import Console

        from misdirection.directions import DirectionSet
        from misdirection.layer_select import select_layer
        from misdirection.model_shape import check_fits, check_layers
        from misdirection.models import load_model

        ds = DirectionSet.load(directions)
        scale_list = _numbers(scales, "--scales", float)
        chosen: list[int] | None = None
        if layers is not None and layers.strip().lower() != "all":
            chosen = _numbers(layers, "--layers", int)
        # A direction or layer that cannot fit fails before the model loads.
        shape = check_layers(model, {"--layers": chosen or []})
        check_fits(ds.directions, model, str(directions), shape=shape)
        lm = load_model(model, adapter=adapter or None, device=device, dtype=dtype)
        if layers is None:
            layer_list: list[int] | None = list(range(0, lm.view.n_layers, 3))
        else:
            layer_list = chosen  # None: every layer
        judge_obj = None
        if judge:
            from misdirection.judge import get_judge

            judge_obj = get_judge(judge)
        sweep = select_layer(
            lm,
            ds,
            scale_list,
            target,
            None,
            layers=layer_list,
            normalize=normalize,
            n_pairs=n_pairs,
            judge=judge_obj,
            questions=questions,
            n_per_question=n_per_question,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            progress=True,
        )
        paths = sweep.save(out)
        console = Console()
        cols = [
            c
            for c in (
                "layer",
                "scale",
                "delta_margin",
                "delta_margin_se",
                "delta_target",
                "delta_anti",
                "em",
                "coherent",
                "chosen",
            )
            if c in sweep.table.columns
        ]
        console.print(sweep.table[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        console.print(
            f"chosen: layer {sweep.best_layer}, scale {sweep.best_scale:g} ({sweep.rule})"
        )
        for note in sweep.notes:
            console.print(f"note: {note}")
        for kind, path in paths.items():
            console.print(f"{kind}: {path}")
