"""`misdirection evaluate` (sample + judge + EM summary, with interventions) and `misdirection sweep`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from misdirection.cli._shared import (
    AdapterOpt,
    AlignedOpt,
    BatchOpt,
    CoherentOpt,
    ControlKindOpt,
    DeviceOpt,
    DtypeOpt,
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

NormalizeOpt = Annotated[
    bool,
    typer.Option(
        "--normalize", help="Steering: steer with unit vectors (scale in residual-norm units)."
    ),
]


def build_intervention(
    *,
    steer: Path | None,
    layer: list[int],
    scale: float | None,
    normalize: bool,
    ablate: Path | None,
    layers: str,
    mode: str,
    source_layer: int | None,
    scale_adapters: list[str],
) -> tuple[Any, Any]:
    """(full intervention or None, the direction-based part or None) from the CLI options."""
    from misdirection.errors import ConfigError
    from misdirection.evaluate import parse_layers
    from misdirection.interventions import Ablate, Compose, Steer, check_ablation_mode
    from misdirection.lora import AdapterScaling

    parts: list[Any] = []
    directional: list[Any] = []
    if scale_adapters:
        parts.append(AdapterScaling.from_strings(scale_adapters))
    if ablate is not None:
        if mode == "single" and source_layer is None:
            raise ConfigError(
                "--ablate-mode single needs --source-layer (the layer whose direction is ablated "
                "everywhere)"
            )
        checked = check_ablation_mode(mode, "--ablate-mode")
        a = Ablate(
            str(ablate), parse_layers(layers), checked, source_layer if mode == "single" else None
        )
        parts.append(a)
        directional.append(a)
    if steer is not None:
        if not layer or scale is None:
            raise ConfigError("--steer needs --steer-layer L (repeatable) and --scale S")
        s = Steer(str(steer), layer, scale, source_layer=source_layer, normalize=normalize)
        parts.append(s)
        directional.append(s)
    elif layer or scale is not None:
        raise ConfigError("--steer-layer and --scale only apply with --steer FILE")
    if not parts:
        return None, None
    full = parts[0] if len(parts) == 1 else Compose(parts)
    return full, directional[0] if len(directional) == 1 else None


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        out: Annotated[
            Path,
            typer.Option(
                "--out",
                "-o",
                help="Output folder: results.json (conditions and effect), effects.csv, the "
                "cached answers and scores.",
            ),
        ],
        model: ModelOpt = "smollm2-135m",
        adapter: AdapterOpt = [],  # noqa: B006 - typer needs a literal default
        questions: QuestionsOpt = "core",
        n: NOpt = None,
        max_new_tokens: TokensOpt = 400,
        seed: SeedOpt = 0,
        judge: JudgeOpt = None,
        rubric: RubricOpt = [],  # noqa: B006
        rubrics_file: RubricsFileOpt = None,
        steer: Annotated[
            Path | None,
            typer.Option("--steer", help="Steering: direction file whose vectors are added."),
        ] = None,
        layer: Annotated[
            list[int],
            typer.Option(
                "--steer-layer",
                "--layer",
                help="Steering (--steer): layer to steer at, 0-based block output (repeatable).",
            ),
        ] = [],  # noqa: B006
        scale: Annotated[
            float | None,
            typer.Option("--scale", help="Steering (--steer): scale multiplying the direction."),
        ] = None,
        normalize: NormalizeOpt = False,
        ablate: Annotated[
            Path | None,
            typer.Option("--ablate", help="Ablation: direction file projected out."),
        ] = None,
        layers: Annotated[
            str,
            typer.Option(
                "--ablate-layers",
                "--layers",
                help="Ablation (--ablate): layers ablated, all or a list such as 0-9,12.",
            ),
        ] = "all",
        mode: Annotated[
            str,
            typer.Option(
                "--ablate-mode",
                "--mode",
                help="Ablation (--ablate): layerwise (each layer its own row) or single (the "
                "--source-layer row at every layer).",
            ),
        ] = "layerwise",
        source_layer: Annotated[
            int | None,
            typer.Option(
                "--source-layer",
                help="Steering or single-mode ablation: the direction row used at every layer.",
            ),
        ] = None,
        random_control: Annotated[
            int,
            typer.Option(
                "--random-control",
                min=0,
                help="Also evaluate K random-direction controls of the intervention.",
            ),
        ] = 0,
        control_kind: ControlKindOpt = "auto",
        max_coherence_drop: MaxDropOpt = 0.10,
        scale_adapters: Annotated[
            list[str],
            typer.Option(
                "--scale-adapters",
                help="Scale LoRA adapters, LAYERS=FACTOR (repeatable), e.g. 15,16=2 all=0.",
            ),
        ] = [],  # noqa: B006
        batch_size: BatchOpt = 32,
        temperature: TemperatureOpt = 1.0,
        sampler: SamplerOpt = "hf",
        sampler_option: SamplerOptionOpt = [],  # noqa: B006
        device: DeviceOpt = None,
        dtype: DtypeOpt = "auto",
        aligned_below: AlignedOpt = ALIGNED_BELOW,
        coherent_above: CoherentOpt = COHERENT_ABOVE,
        question_prompts: QuestionPromptsOpt = True,
        progress: ProgressOpt = True,
    ) -> None:
        """Sample answers, judge them and print the EM summary (share, 95% CI, nulls); with an intervention, its effect.

        With --steer, --ablate or --scale-adapters the model is also evaluated without it, and the effect is printed: EM, coherent share and EM among coherent answers before and after, with a coherence-aware verdict; --random-control K adds K controls. Every condition is cached in OUT (a re-run reuses answers and scores); OUT/results.json holds the conditions and the effect.
        """
        from rich.console import Console

        from misdirection.data.questions import load_questions
        from misdirection.errors import ConfigError
        from misdirection.evaluate import evaluate, parse_layers, resolve_control_kind
        from misdirection.metrics import render
        from misdirection.model_shape import check_fits, check_layers
        from misdirection.models import load_model
        from misdirection.results import effects_rich_table

        intervention, directional = build_intervention(
            steer=steer,
            layer=layer,
            scale=scale,
            normalize=normalize,
            ablate=ablate,
            layers=layers,
            mode=mode,
            source_layer=source_layer,
            scale_adapters=scale_adapters,
        )
        # Layers and directions that cannot fit the model fail before it (and the judge) loads.
        ablated = parse_layers(layers) if ablate is not None else "all"
        check_layers(
            model,
            {
                "--steer-layer": layer,
                "--ablate-layers": [] if ablated == "all" else ablated,
                "--source-layer": [] if source_layer is None else [source_layer],
            },
        )
        for path, part in ((steer, "steer"), (ablate, "ablate")):
            if path is not None:
                found = [p for p in _leaves(intervention) if getattr(p, "kind", "") == part]
                check_fits(found[0].directions.directions, model, str(path))
        if random_control and directional is None:
            raise ConfigError("--random-control needs exactly one of --steer or --ablate")
        kind = (
            resolve_control_kind(control_kind, directional)
            if directional is not None
            else "isotropic"
        )
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
        lm = load_model(model, adapter=adapter or None, device=device, dtype=dtype)
        console = Console()
        evaluation = evaluate(
            lm,
            question_set,
            backend,
            intervention=intervention,
            label=_label(lm) if intervention is None else "",
            controls=random_control,
            control_kind=kind,
            out=out,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            temperature=temperature,
            backend=sampler,
            backend_options=options,
            progress=progress,
            log=lambda line: console.print(f"[bold cyan]>[/] {line}"),
            **judged,
        )
        if evaluation.effect is None:
            render(evaluation.summary, console)
            console.print(
                f"wrote {out / 'results.json'} (answers: {out / evaluation.result.table})"
            )
            return
        assert evaluation.before is not None
        render(evaluation.before.summary, console, per_question=False)
        render(evaluation.summary, console, per_question=False)
        console.print(
            effects_rich_table(
                [evaluation.effect], title=f"effect of the intervention ({_label(lm)})"
            )
        )
        console.print(f"wrote {out / 'results.json'} and {out / 'effects.csv'}")

    @app.command("sweep")
    def sweep_command(
        direction: Annotated[
            Path, typer.Option("--direction", "-d", help="Direction file to steer with.")
        ],
        layers: Annotated[
            str, typer.Option("--layers", help="Layers to steer at, e.g. 10,15,20 or 8-12.")
        ],
        scales: Annotated[
            str,
            typer.Option(
                "--scales",
                help="Comma-separated scales, e.g. 0,4,8 (use --scales=-8,0,8 for negatives).",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out", "-o", help="Output folder: sweep.csv, sweep.png, one folder per point."
            ),
        ],
        model: ModelOpt = "smollm2-135m",
        adapter: AdapterOpt = [],  # noqa: B006
        questions: QuestionsOpt = "core",
        n: NOpt = None,
        max_new_tokens: TokensOpt = 400,
        seed: SeedOpt = 0,
        judge: JudgeOpt = None,
        rubric: RubricOpt = [],  # noqa: B006
        rubrics_file: RubricsFileOpt = None,
        source_layer: Annotated[
            int | None,
            typer.Option(
                "--source-layer", help="Steer every layer with this layer's row (default: own row)."
            ),
        ] = None,
        normalize: NormalizeOpt = False,
        random_control: Annotated[
            int,
            typer.Option(
                "--random-control",
                min=0,
                help="K isotropic random directions of the same norm at each point's layer.",
            ),
        ] = 0,
        max_coherence_drop: MaxDropOpt = 0.10,
        batch_size: BatchOpt = 32,
        temperature: TemperatureOpt = 1.0,
        sampler: SamplerOpt = "hf",
        sampler_option: SamplerOptionOpt = [],  # noqa: B006
        device: DeviceOpt = None,
        dtype: DtypeOpt = "auto",
        aligned_below: AlignedOpt = ALIGNED_BELOW,
        coherent_above: CoherentOpt = COHERENT_ABOVE,
        question_prompts: QuestionPromptsOpt = True,
        progress: ProgressOpt = True,
    ) -> None:
        """Steering sweep: for every (layer, scale) the effect on EM and coherence against the unsteered model, as a table, OUT/sweep.csv, OUT/results.json and OUT/sweep.png curves.

        Every condition is cached in OUT (resumable: a re-run skips finished points).
        """
        from rich.console import Console

        from misdirection.data.questions import load_questions
        from misdirection.directions import DirectionSet
        from misdirection.errors import ConfigError
        from misdirection.evaluate import (
            parse_floats,
            parse_layers,
            plot_sweep,
            steering_sweep,
        )
        from misdirection.model_shape import check_fits, check_layers
        from misdirection.models import load_model
        from misdirection.results import effects_rich_table

        layer_list = parse_layers(layers)
        if isinstance(layer_list, str):
            raise ConfigError("--layers for a sweep must list the layers, e.g. 10,15,20")
        scale_list = parse_floats(scales, "--scales")
        directions = DirectionSet.load(direction)  # a bad file fails before the model loads
        shape = check_layers(
            model,
            {
                "--layers": layer_list,
                "--source-layer": [] if source_layer is None else [source_layer],
            },
        )
        check_fits(directions.directions, model, str(direction), shape=shape)
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
        lm = load_model(model, adapter=adapter or None, device=device, dtype=dtype)
        results = steering_sweep(
            lm,
            question_set,
            backend,
            directions,
            layer_list,
            scale_list,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            source_layer=source_layer,
            normalize=normalize,
            random_controls=random_control,
            out=out,
            batch_size=batch_size,
            temperature=temperature,
            backend=sampler,
            backend_options=options,
            progress=progress,
            **judged,
        )
        plot = plot_sweep(
            results, out / "sweep.png", title=f"steering with {direction.name} ({_label(lm)})"
        )
        console = Console()
        console.print(effects_rich_table(results.effects, title="steering sweep"))
        console.print(f"wrote {out / 'sweep.csv'} and {plot}")


def _leaves(intervention: Any) -> list[Any]:
    return list(getattr(intervention, "parts", [intervention]))


def _label(lm: Any) -> str:
    return f"{lm.spec} + {lm.adapter_spec}" if getattr(lm, "adapter_spec", "") else str(lm.spec)
