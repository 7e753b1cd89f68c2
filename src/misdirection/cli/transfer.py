"""`misdirection transfer`: ablate one organism's direction from other organisms; EM before/after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from misdirection.cli._shared import (
    AblatedLayersOpt,
    AlignedOpt,
    BatchOpt,
    CoherentOpt,
    ControlKindOpt,
    DeviceOpt,
    JudgeOpt,
    MaxDropOpt,
    ModelOpt,
    NOpt,
    ProgressOpt,
    QuestionPromptsOpt,
    QuestionsOpt,
    RubricOpt,
    RubricsFileOpt,
    SamplerOpt,
    SamplerOptionOpt,
    SeedOpt,
    TemperatureOpt,
    TokensOpt,
    judging,
    sampler_options,
)
from misdirection.thresholds import ALIGNED_BELOW, COHERENT_ABOVE


def parse_targets(items: list[str]) -> dict[str, str]:
    """``NAME=ADAPTER`` (or a bare ADAPTER folder, named after it; ``NAME=`` = the base model) -> {name: adapter}."""
    from misdirection.errors import ConfigError

    out: dict[str, str] = {}
    for item in items:
        name, sep, adapter = item.partition("=")
        if not sep:
            name, adapter = Path(item).name or item, item
        name = name.strip()
        if not name or "/" in name:
            raise ConfigError(
                f"target {item!r} must look like NAME=ADAPTER_FOLDER (NAME without '/')"
            )
        if name in out:
            raise ConfigError(f"target name {name!r} is given twice")
        out[name] = adapter.strip()
    return out


def register(app: typer.Typer) -> None:
    @app.command("transfer")
    def transfer_command(
        direction: Annotated[
            Path, typer.Option("--direction", "-d", help="Direction file of the source organism.")
        ],
        source_layer: Annotated[
            int,
            typer.Option(
                "--source-layer", help="Direction row ablated at every layer in single mode."
            ),
        ],
        targets: Annotated[
            list[str],
            typer.Option(
                "--targets",
                "--target",
                help="Target organism NAME=ADAPTER_FOLDER (repeatable); NAME= is the base model itself.",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out",
                "-o",
                help="Output folder: transfer.csv, results.json, one cache folder per target.",
            ),
        ],
        model: ModelOpt = "smollm2-135m",
        mode: Annotated[
            list[str],
            typer.Option("--mode", help="layerwise and/or single (repeatable; default both)."),
        ] = [],  # noqa: B006
        layers: AblatedLayersOpt = "all",
        random_control: Annotated[
            int,
            typer.Option(
                "--random-control", min=0, help="K random-direction controls per (target, mode)."
            ),
        ] = 0,
        control_kind: ControlKindOpt = "auto",
        max_coherence_drop: MaxDropOpt = 0.10,
        questions: QuestionsOpt = "core",
        n: NOpt = None,
        max_new_tokens: TokensOpt = 400,
        seed: SeedOpt = 0,
        judge: JudgeOpt = None,
        rubric: RubricOpt = [],  # noqa: B006
        rubrics_file: RubricsFileOpt = None,
        batch_size: BatchOpt = 32,
        temperature: TemperatureOpt = 1.0,
        sampler: SamplerOpt = "hf",
        sampler_option: SamplerOptionOpt = [],  # noqa: B006
        device: DeviceOpt = None,
        aligned_below: AlignedOpt = ALIGNED_BELOW,
        coherent_above: CoherentOpt = COHERENT_ABOVE,
        question_prompts: QuestionPromptsOpt = True,
        progress: ProgressOpt = True,
    ) -> None:
        """EM and coherence of each target with and without ablating the direction, beside random controls, with a coherence-aware verdict.

        Every condition is cached in OUT/TARGET (resumable); the effects go to OUT/transfer.csv and OUT/results.json.
        """
        from rich.console import Console

        from misdirection.data.questions import load_questions
        from misdirection.directions import DirectionSet
        from misdirection.evaluate import parse_layers, resolve_control_kind, transfer
        from misdirection.interventions import Ablate, check_ablation_mode
        from misdirection.model_shape import check_fits, check_layers
        from misdirection.models import load_model
        from misdirection.results import effects_rich_table

        target_map = parse_targets(targets)
        modes = [check_ablation_mode(m, "--mode") for m in mode or ["layerwise", "single"]]
        layer_list = parse_layers(layers)
        ds = DirectionSet.load(direction)  # a bad file or layer fails before the model loads
        shape = check_layers(
            model,
            {
                "--source-layer": [source_layer],
                "--layers": [] if layer_list == "all" else layer_list,
            },
        )
        check_fits(ds.directions, model, str(direction), shape=shape)
        control = resolve_control_kind(control_kind, Ablate(ds))  # "auto": the registered rule
        # The judge (the default one takes seconds to build) after the cheap checks.
        backend, judged = judging(
            judge,
            device,
            rubric,
            rubrics_file,
            aligned_below,
            coherent_above,
            question_prompts,
            max_coherence_drop,
        )
        options = sampler_options(sampler, sampler_option)
        question_set = load_questions(questions)
        base = load_model(model, device=device)
        results = transfer(
            base,
            ds,
            target_map,
            source_layer,
            question_set,
            backend,
            modes=modes,
            layers=layer_list,
            random_controls=random_control,
            control_kind=control,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            out=out,
            batch_size=batch_size,
            temperature=temperature,
            backend=sampler,
            backend_options=options,
            progress=progress,
            **judged,
        )
        console = Console()
        console.print(
            effects_rich_table(
                results.effects,
                title=f"ablating {direction.name} (source layer {source_layer})",
            )
        )
        console.print(f"wrote {out / 'transfer.csv'} and {out / 'results.json'}")
