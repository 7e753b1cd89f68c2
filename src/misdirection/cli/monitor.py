"""`misdirection monitor`: a direction's projection across existing training checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from misdirection.cli._shared import ModelOpt, QuestionsOpt
from misdirection.errors import ConfigError


def checkpoint_folders(paths: list[Path]) -> list[Path]:
    """Adapter folders in step order: an organism folder expands to its checkpoints, then itself."""
    from misdirection.training_time.monitor import step_of

    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"checkpoint folder {path} does not exist")
        inner = sorted(
            (
                p
                for p in (path / "checkpoints").glob("step-*")
                if (p / "adapter_config.json").is_file()
            ),
            key=lambda p: step_of(p, 0),
        )
        out += inner
        if (path / "adapter_config.json").is_file():
            out.append(path)
        elif not inner:
            raise ConfigError(
                f"{path} is neither a PEFT adapter folder (adapter_config.json) nor an organism "
                "folder with checkpoints/step-N inside"
            )
    return out


def register(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor_command(
        checkpoints: Annotated[
            list[Path],
            typer.Argument(
                help="Checkpoint folders (PEFT adapters named step-N), or organism folders whose "
                "checkpoints/step-N are read in order (train with --keep-checkpoints K to keep K).",
            ),
        ],
        directions: Annotated[
            Path, typer.Option("--directions", "-d", help="Direction file (one row per layer).")
        ],
        model: ModelOpt = "smollm2-135m",
        questions: QuestionsOpt = "core",
        probe: Annotated[
            Path | None,
            typer.Option(
                "--probe",
                help="Answers table (parquet/CSV with question, answer) read as the probe set "
                "(default: the base model's greedy answers to --questions).",
            ),
        ] = None,
        data: Annotated[
            str | None,
            typer.Option(
                "--data",
                help="Training dataset (name or JSONL) whose first --rows rows are read as the "
                "training batch (default: the run card's dataset when there is one).",
            ),
        ] = None,
        rows: Annotated[int, typer.Option("--rows", min=1, help="Training rows read.")] = 32,
        layer: Annotated[
            int | None, typer.Option("--layer", help="Layer plotted (default: the middle one).")
        ] = None,
        band_se: Annotated[
            float, typer.Option("--band-se", min=0.0, help="Step-0 band half-width in SEs.")
        ] = 2.0,
        max_new_tokens: Annotated[
            int, typer.Option("--max-new-tokens", "-t", min=1, help="Probe answer length.")
        ] = 48,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder for monitor.json/png.")
        ] = Path("monitor"),
    ) -> None:
        """Read a direction's projection through each checkpoint of a training run (made here or elsewhere).

        Records the base model as step 0, then each checkpoint: the mean projection of a fixed probe
        set (answers to the evaluation questions) and of training rows' assistant tokens. Prints
        the step at which the probe projection leaves its step-0 band (rule printed) and writes
        OUT/monitor.json and OUT/monitor.png. EM per checkpoint is not computed here (costly): run
        `misdirection evaluate --adapter CHECKPOINT` on the ones you need.
        """
        import json

        import pandas as pd
        from rich.console import Console

        from misdirection.data.chat import load_chat_dataset
        from misdirection.data.questions import load_questions
        from misdirection.directions import DirectionSet
        from misdirection.model_shape import check_layers, model_shape
        from misdirection.models import load_model
        from misdirection.sample import sample_answers
        from misdirection.training_time.defence import check_direction_fits
        from misdirection.training_time.monitor import monitor_checkpoints, plot_monitor

        console = Console()
        folders = checkpoint_folders(checkpoints)
        ds = DirectionSet.load(directions)
        shape = model_shape(model)  # a direction or layer that cannot fit fails before loading
        check_layers(model, {"--layer": [] if layer is None else [layer]}, shape)
        if shape is not None:
            check_direction_fits(ds, shape.n_layers, shape.d_model, None, "--directions")
        if data is None:
            for path in checkpoints:
                card = path / "run_card.json"
                if card.is_file():
                    data = json.loads(card.read_text()).get("dataset")
                    break
        train_rows = list(load_chat_dataset(data, "train").rows[:rows]) if data else []
        if probe is not None:
            table = pd.read_parquet(probe) if probe.suffix == ".parquet" else pd.read_csv(probe)
        else:
            table = None
        lm = load_model(model)
        if table is None:
            console.print(f"probe set: the base model's greedy answers to '{questions}'")
            table = sample_answers(
                lm, load_questions(questions).items, 1, max_new_tokens, seed=0, temperature=0.0,
                progress=False,
            )  # fmt: skip
            table = table[table["answer"].str.strip() != ""].reset_index(drop=True)
        result = monitor_checkpoints(
            lm, folders, ds, table, data_rows=train_rows, figure_layer=layer, band_se=band_se
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / "monitor.json").write_text(result.model_dump_json(indent=1))
        plot_monitor([result], out / "monitor.png", title=f"projection on {directions.name}")
        k = result.layers.index(result.figure_layer)
        console.print(
            f"layer {result.figure_layer}, {result.n_probe} probe answers, {len(train_rows)} training rows"
        )
        for p in result.points:
            batch = p.batch_mean[k]
            console.print(
                f"step {p.step:>6}: probe {p.probe_mean[k]:+.4f} ± {p.probe_se[k]:.4f}"
                + ("" if batch is None else f", training rows {batch:+.4f}")
            )
        dep = result.departure_step()
        console.print(f"leaves its step-0 band at: {'never' if dep is None else f'step {dep}'}")
        console.print(f"rule: {result.rules()['projection']}")
        console.print(f"saved {out / 'monitor.json'} and {out / 'monitor.png'}")
