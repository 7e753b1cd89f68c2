"""Evaluate models and interventions: conditions, effects with verdicts, sweeps and transfer.

Everything here runs through one engine (:class:`misdirection.engine.Engine`) and compares
conditions with one function (:func:`misdirection.effects.compare`):

* :func:`evaluate` — one condition: sample, judge, summarise (cached and resumable under ``out``).
* :func:`intervention_effect` — a model with and without an intervention, beside K random controls
  of it: EM, coherence and EM among coherent answers, their changes, and a coherence-aware verdict.
* :func:`steering_sweep` — steering over layers x scales, each point an effect with its controls.
* :func:`transfer` — ablate one organism's direction from other organisms, with random controls.

Everything that can fail cheaply (the judge, layers, direction widths, adapter selections) is
checked before the first answer is sampled.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import pandas as pd

from misdirection.engine import REQUIRED_RUBRICS, Engine, SamplingSettings, resolve_judge
from misdirection.errors import ConfigError, check_layer
from misdirection.intervention_registry import (
    CONTROL_KINDS,
    ControlKind,
    intervention_info,
    registered,
)
from misdirection.metrics import Summary, Thresholds, summarize
from misdirection.protocols import (
    ComposedIntervention,
    DirectionalIntervention,
    Intervention,
    Judge,
    LanguageModel,
)
from misdirection.results import (
    ConditionKind,
    ConditionResult,
    Effect,
    EffectPolicy,
    JudgeInfo,
    Results,
)

if TYPE_CHECKING:
    import torch

    from misdirection.direction_set import DirectionSet, DirectionsLike
    from misdirection.judge.base import Rubric
    from misdirection.models import LoadedModel

    #: A transfer target: adapter folder(s), None / "" for the base itself, or a loaded model.
    TransferTarget = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | LoadedModel | None

# ----------------------------------------------------------------------------------------------
# Small helpers


def parse_layers(text: str | int | Sequence[int]) -> Literal["all"] | list[int]:
    """``"all"`` -> ``"all"``; ``"3,5,10-12"`` -> ``[3, 5, 10, 11, 12]`` (sorted, unique)."""
    if isinstance(text, bool):
        raise ConfigError(f"layers must be 'all', a layer or a list of layers, got {text!r}")
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        return sorted({int(x) for x in text})
    if text.strip().lower() == "all":
        return "all"
    out: set[int] = set()
    for tok in (t.strip() for t in text.split(",")):
        single = re.fullmatch(r"-?\d+", tok)
        span = re.fullmatch(r"(\d+)-(\d+)", tok)
        if single:
            out.add(int(tok))
        elif span and int(span.group(1)) <= int(span.group(2)):
            out.update(range(int(span.group(1)), int(span.group(2)) + 1))
        else:
            raise ConfigError(
                f"layers {text!r} must be 'all' or a comma-separated list of layers and ranges, e.g. 3,5,10-12"
            )
    return sorted(out)


def parse_floats(text: str | Sequence[float], what: str = "scales") -> list[float]:
    """``"-4,0,2.5"`` -> ``[-4.0, 0.0, 2.5]`` (order kept)."""
    if not isinstance(text, str):
        return [float(x) for x in text]
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} must be a comma-separated list of numbers, e.g. -4,0,4"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{what} {text!r} must hold at least one finite number")
    return values


def direction_part(intervention: Intervention) -> DirectionalIntervention:
    """The part of an intervention whose directions random controls replace (itself, or the one
    direction-based part of a composition)."""
    if isinstance(intervention, ComposedIntervention):
        return intervention.direction_part()
    if not isinstance(intervention, DirectionalIntervention):
        raise ConfigError(
            f"random controls need a direction-based intervention (one with with_directions: "
            f"{', '.join(k for k, i in registered().items() if i.directional and k != 'compose')})"
            f", not {getattr(intervention, 'kind', type(intervention).__name__)}"
        )
    return intervention


def with_directions(intervention: Intervention, directions: DirectionSet) -> Intervention:
    """A copy of a direction-based intervention (or a Compose holding one) using other directions.

    Used for random controls: the same intervention with the reference replaced by a control set.
    """
    part = direction_part(intervention)  # a clear error for interventions without directions
    if isinstance(intervention, ComposedIntervention):
        return intervention.with_directions(directions)
    return part.with_directions(directions)


def resolve_control_kind(kind: str, intervention: Intervention) -> ControlKind:
    """The random control of ``intervention``: ``kind``, or for ``"auto"`` its registered one.

    ``auto``: the intervention class's ``control_kind`` (:mod:`misdirection.intervention_registry`);
    variance-matched only where the direction's answer activations are on disk (else isotropic).
    """
    from misdirection.reliability import samples_path

    if kind not in ("auto", *CONTROL_KINDS):
        raise ConfigError(f"control kind must be auto, {' or '.join(CONTROL_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind  # type: ignore[return-value]  # checked above
    part = direction_part(intervention)
    declared = intervention_info(part).control_kind
    if declared != "variance-matched":
        return "isotropic"
    path = part.directions.path
    return "variance-matched" if path is not None and samples_path(path).is_file() else "isotropic"


# ----------------------------------------------------------------------------------------------
# One condition


@dataclass
class Evaluation:
    """One judged condition: its typed result, the judged answers and the full summary.

    With an intervention (and ``effect=True``): ``before`` is the model without it and ``effect``
    the intervention's effect (beside its random controls). ``results``: every condition run and
    the effect, what ``results.json`` holds.
    """

    result: ConditionResult
    table: pd.DataFrame
    summary: Summary
    results: Results
    before: Evaluation | None = None
    effect: Effect | None = None


def make_engine(
    lm: LanguageModel,
    questions: Iterable[Any],
    judge: Judge | str | None,
    *,
    n: int | None,
    max_new_tokens: int,
    seed: int,
    out: str | Path | None = None,
    rubrics: Sequence[str | Rubric] = REQUIRED_RUBRICS,
    thresholds: Thresholds = Thresholds(),
    custom_rubrics: Mapping[str, Rubric] | None = None,
    batch_size: int = 32,
    temperature: float = 1.0,
    use_question_prompts: bool = True,
    policy: EffectPolicy | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    backend: str = "hf",
    backend_options: Mapping[str, Any] | None = None,
) -> Engine:
    """The engine of the CLI verbs and library calls: cache under ``out`` (temporary when None).

    ``backend`` / ``backend_options``: what samples the answers (see :class:`SamplingSettings`).
    """
    return Engine(
        lm,
        questions,
        judge,
        store=out,
        sampling=SamplingSettings(
            samples_per_paraphrase=n,
            max_new_tokens=int(max_new_tokens),
            temperature=float(temperature),
            batch_size=int(batch_size),
            seed=int(seed),
            backend=backend,  # type: ignore[arg-type]  # make_backend names the known ones
            backend_options=dict(backend_options or {}),
        ),
        rubrics=rubrics,
        custom_rubrics=custom_rubrics,
        use_question_prompts=use_question_prompts,
        thresholds=thresholds,
        policy=policy,
        progress=progress,
        log=log,
    )


def evaluate(
    lm: LanguageModel,
    questions: Iterable[Any],
    judge: Judge | str | None,
    *,
    intervention: Intervention | None = None,
    label: str = "",
    kind: ConditionKind | None = None,
    effect: bool = True,
    effect_kind: str = "intervention",
    controls: int = 0,
    control_kind: ControlKind | Literal["auto"] = "auto",
    out: str | Path | None = None,
    **engine_options: Any,
) -> Evaluation:
    """Sample answers with ``lm`` (under ``intervention``), judge them, summarise EM.

    With an ``intervention`` the model is also evaluated without it (``effect=False``: not) and
    the effect is computed (:func:`intervention_effect`, kind ``effect_kind``), beside
    ``controls`` random controls of kind ``control_kind`` (``auto``: the intervention's registered
    control, :func:`resolve_control_kind`). ``label`` names the condition (default ``evaluate``,
    or the intervention's kind); ``kind`` defaults to ``evaluate`` or the intervention's registered
    condition kind.

    ``judge`` is a Judge, a spec string (``openai:MODEL``...) or None (the default judge); it is
    built *before* sampling, so a judge that cannot run (no API key) fails before any work.
    ``engine_options``: those of :func:`make_engine` (``n``, ``max_new_tokens``, ``seed`` are
    required). ``out`` caches every condition there, so a re-run reuses answers and scores, and
    receives ``results.json`` (and ``effects.csv`` with an effect).
    """
    if intervention is None and controls:
        raise ConfigError("random controls need an intervention")
    if intervention is not None and controls:
        control_kind = resolve_control_kind(control_kind, intervention)  # fails before sampling
    engine = make_engine(lm, questions, judge, out=out, **engine_options)
    effects: list[Effect] = []
    before: Evaluation | None = None
    if intervention is None or not effect:
        condition_kind = kind or (
            "evaluate" if intervention is None else intervention_info(intervention).condition_kind
        )
        result = engine.run(label or "evaluate", condition_kind, intervention=intervention)
    else:
        found = intervention_effect(
            engine,
            intervention,
            name=label or intervention_info(intervention).kind,
            kind=effect_kind,
            condition_kind=kind,
            controls=controls,
            control_kind=control_kind,
        )
        effects.append(found)
        result = engine.results[found.after]
        before = _evaluation(engine, engine.results[found.before], engine_results(engine))
    results = engine_results(engine, effects)
    if out is not None:
        write_results(results, out, "effects.csv")
    evaluation = _evaluation(engine, result, results)
    evaluation.before = before
    evaluation.effect = effects[0] if effects else None
    return evaluation


def _evaluation(engine: Engine, result: ConditionResult, results: Results) -> Evaluation:
    table = engine.table(result)
    summary = summarize(table, thresholds=engine.thresholds, label=result.name)
    return Evaluation(result=result, table=table, summary=summary, results=results)


# ----------------------------------------------------------------------------------------------
# Interventions and their random controls


def control_activations(directions: DirectionSet) -> torch.Tensor:
    """The activations a variance-matched control is matched on: the direction's own answers."""
    from misdirection.reliability import DirectionSamples, samples_path

    path = directions.path
    if path is None or not samples_path(path).is_file():
        where = "an in-memory direction set" if path is None else str(samples_path(path))
        raise ConfigError(
            f"variance-matched controls need the direction's answer activations; found none for "
            f"{where} (extract the direction with misdirection extract, or use isotropic controls)"
        )
    samples = DirectionSamples.load(samples_path(path))
    import torch

    return torch.cat([samples.misaligned, samples.aligned])


def control_interventions(
    intervention: Intervention,
    k: int,
    *,
    first_seed: int = 0,
    kind: ControlKind = "isotropic",
    activations: torch.Tensor | None = None,
    save_to: str | Path | None = None,
) -> list[Intervention]:
    """``k`` copies of a Steer / Ablate (or a Compose holding one) with random directions.

    ``isotropic``: uniformly random directions of the reference's norm at every layer (steering's
    control: same norm, same layer). ``variance-matched``: directions orthogonal to the reference
    along which the activations have the reference's second moment (ablation's control: it removes
    as much of the activations as the reference does); ``activations`` default to the direction's
    own answers (:func:`control_activations`).
    """
    from misdirection.controls import random_controls

    if k < 1:
        return []
    reference = direction_part(intervention).directions
    if kind == "variance-matched" and activations is None:
        activations = control_activations(reference)
    sets = random_controls(reference, k, first_seed, kind=kind, activations=activations)
    if save_to is not None and kind != "isotropic":
        # A matched control cannot be rebuilt from its seed alone; keep its vectors in a file so
        # specs (and results.json) point at it instead of carrying every vector inline.
        for ds in sets:
            ds.save(Path(save_to) / f"{ds.sha256()[:16]}.safetensors")
    return [with_directions(intervention, ds) for ds in sets]


def intervention_effect(
    engine: Engine,
    intervention: Intervention,
    *,
    name: str,
    kind: str | None = None,
    condition_kind: ConditionKind | None = None,
    organism: str | None = None,
    before: ConditionResult | None = None,
    controls: int = 0,
    first_control_seed: int = 0,
    control_kind: ControlKind | Literal["auto"] = "isotropic",
    activations: torch.Tensor | None = None,
    samples_per_paraphrase: int | None = None,
    settings: dict[str, Any] | None = None,
) -> Effect:
    """Run the model with and without ``intervention`` (and K random controls); their effect.

    ``before``: the unintervened condition when already run (else it is run as ``<organism or
    base>``). ``condition_kind`` (of the intervened condition) and ``kind`` (of the effect) default
    to the intervention's registered condition kind; ``control_kind="auto"`` resolves with
    :func:`resolve_control_kind`. Every control is checked before the first answer is sampled.
    """
    condition_kind = condition_kind or intervention_info(intervention).condition_kind
    kind = kind or condition_kind
    resolved = resolve_control_kind(control_kind, intervention) if controls else "isotropic"
    control_list = control_interventions(
        intervention,
        controls,
        first_seed=first_control_seed,
        kind=resolved,
        activations=activations,
        save_to=engine.store.root / "controls",
    )
    engine.check(intervention, organism)
    for c in control_list:
        engine.check(c, organism)
    if before is None:
        tuned = organism is not None or bool(engine.model.adapter_spec)
        before = engine.run(
            organism or ("organism" if tuned else "base"),
            "organism" if tuned else "base",
            organism=organism,
        )
    after = engine.run(
        name,
        condition_kind,
        organism=organism,
        intervention=intervention,
        samples_per_paraphrase=samples_per_paraphrase,
    )
    control_results = [
        engine.run(
            f"{name}~random-{first_control_seed + i}",
            "control",
            organism=organism,
            intervention=c,
            samples_per_paraphrase=samples_per_paraphrase,
        )
        for i, c in enumerate(control_list)
    ]
    return engine.effect(
        before,
        after,
        name=name,
        kind=kind,
        controls=control_results,
        control_kind=resolved,
        settings={**(settings or {}), "organism": organism or "base"},
    )


def engine_results(engine: Engine, effects: Sequence[Effect] = ()) -> Results:
    """The engine's conditions and the given effects as one results model."""
    return Results(
        judge=JudgeInfo(name=engine.judge.name),
        policy=engine.policy,
        conditions=list(engine.results.values()),
        effects=list(effects),
    )


def write_results(results: Results, out: str | Path, csv_name: str | None = None) -> Path:
    """``out/results.json`` (and the effects as ``out/<csv_name>``); returns the JSON path."""
    from misdirection.io import atomic_write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    atomic_write_text(path, results.model_dump_json(indent=2))
    if csv_name and results.effects:
        results.effects_frame().to_csv(folder / csv_name, index=False)
    return path


# ----------------------------------------------------------------------------------------------
# Steering sweep


def steer_effects(
    engine: Engine,
    directions: DirectionsLike,
    layers: Sequence[int],
    scales: Sequence[float],
    before: ConditionResult,
    *,
    prefix: str = "steer",
    source_layer: int | None = None,
    normalize: bool = False,
    random_controls: int = 0,
    first_control_seed: int = 0,
    samples_per_paraphrase: int | None = None,
    settings: dict[str, Any] | None = None,
) -> list[Effect]:
    """One steering effect per (layer, scale) against ``before``, each with its isotropic controls.

    Effects are named ``{prefix}-L{layer}-x{scale}``. Every layer's vector is checked (width,
    layer count, zero norm) before the first answer is sampled. The one loop behind
    :func:`steering_sweep` and a study's steering stage.
    """
    from misdirection.direction_set import as_direction_set
    from misdirection.interventions import Steer

    ds = as_direction_set(directions)
    layer_list = [
        check_layer(int(layer), engine.model.view.n_layers, "steering layer") for layer in layers
    ]
    scale_list = [float(s) for s in scales]
    if not layer_list or not scale_list:
        raise ConfigError("a steering sweep needs at least one layer and one scale")
    if random_controls < 0:
        raise ConfigError(f"the number of random controls must be >= 0, got {random_controls}")
    steers = {
        (layer, scale): Steer(ds, [layer], scale, source_layer=source_layer, normalize=normalize)
        for layer in layer_list
        for scale in scale_list
    }
    for layer in layer_list:
        steers[(layer, scale_list[0])].vectors(engine.model.model)
    return [
        intervention_effect(
            engine,
            steer,
            name=f"{prefix}-L{layer}-x{scale:g}",
            kind="steer",
            condition_kind="steer",
            before=before,
            controls=random_controls,
            first_control_seed=first_control_seed,
            samples_per_paraphrase=samples_per_paraphrase,
            settings={**(settings or {}), "layer": layer, "scale": scale},
        )
        for (layer, scale), steer in steers.items()
    ]


def ablation_effects(
    engine: Engine,
    directions: DirectionsLike,
    before: ConditionResult,
    target: str,
    source_layer: int,
    *,
    modes: Sequence[Literal["layerwise", "single"]] = ("layerwise", "single"),
    layers: Literal["all"] | Sequence[int] = "all",
    kind: Literal["ablate", "transfer"] = "transfer",
    organism: str | None = None,
    name: str = "ablate-{mode}-from-{target}",
    random_controls: int = 0,
    first_control_seed: int = 0,
    control_kind: ControlKind = "isotropic",
    activations: torch.Tensor | None = None,
    samples_per_paraphrase: int | None = None,
    settings: dict[str, Any] | None = None,
) -> list[Effect]:
    """Ablate a direction from one target (layer-wise and/or single) against ``before``.

    ``name`` is formatted with ``mode`` and ``target``. The one loop behind :func:`transfer` and a
    study's ablation stage; ``activations`` (answers' activations) make variance-matched controls.
    """
    from misdirection.direction_set import as_direction_set
    from misdirection.interventions import Ablate, check_ablation_mode

    if not modes:
        raise ConfigError("an ablation needs at least one mode (layerwise, single)")
    modes = [check_ablation_mode(m) for m in modes]
    if random_controls < 0:
        raise ConfigError(f"the number of random controls must be >= 0, got {random_controls}")
    ds = as_direction_set(directions)
    check_layer(source_layer, ds.n_layers, "source layer")
    return [
        intervention_effect(
            engine,
            Ablate(ds, layers, mode, source_layer if mode == "single" else None),
            name=name.format(mode=mode, target=target),
            kind=kind,
            condition_kind="ablate",
            organism=organism,
            before=before,
            controls=random_controls,
            first_control_seed=first_control_seed,
            control_kind=control_kind,
            activations=activations,
            samples_per_paraphrase=samples_per_paraphrase,
            settings={
                **(settings or {}),
                "target": target,
                "mode": mode,
                "source_layer": source_layer if mode == "single" else None,
            },
        )
        for mode in modes
    ]


def steering_sweep(
    lm: LanguageModel,
    questions: Iterable[Any],
    judge: Judge | str | None,
    directions: DirectionsLike,
    layers: Sequence[int],
    scales: Sequence[float],
    *,
    source_layer: int | None = None,
    normalize: bool = False,
    random_controls: int = 0,
    first_control_seed: int = 0,
    out: str | Path | None = None,
    **engine_options: Any,
) -> Results:
    """Steering at each layer with each scale: one effect per (layer, scale) against no steering.

    ``directions``: a DirectionSet, a tensor or a direction file; layer ``l`` is steered with row
    ``l`` (or row ``source_layer`` everywhere). Each point has ``random_controls`` isotropic
    controls (same norm, same layer). With ``out`` every condition is cached there and the effects
    are written to ``out/sweep.csv`` and ``out/results.json``.
    """
    from misdirection.direction_set import as_direction_set
    from misdirection.interventions import Steer

    judge = resolve_judge(judge)
    ds = as_direction_set(directions)
    # Layers, widths and zero norms before the engine samples anything (steer_effects checks
    # them again, after the unsteered condition).
    for layer in layers:
        check_layer(int(layer), lm.view.n_layers, "steering layer")
        Steer(ds, [int(layer)], 1.0, source_layer=source_layer, normalize=normalize).vectors(
            lm.model
        )
    if not list(layers) or not list(scales):
        raise ConfigError("a steering sweep needs at least one layer and one scale")
    if random_controls < 0:
        raise ConfigError(f"the number of random controls must be >= 0, got {random_controls}")
    engine = make_engine(lm, questions, judge, out=out, **engine_options)
    before = engine.run("unsteered", "base")
    effects = steer_effects(
        engine,
        ds,
        layers,
        scales,
        before,
        source_layer=source_layer,
        normalize=normalize,
        random_controls=random_controls,
        first_control_seed=first_control_seed,
    )
    results = engine_results(engine, effects)
    if out is not None:
        write_results(results, out, "sweep.csv")
    return results


def plot_sweep(results: Results, path: str | Path, title: str = "") -> Path:
    """EM and coherent share against scale, one line (with its interval band) per layer.

    The unsteered model is drawn at scale 0 of every layer, so each curve starts at the baseline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for e in results.effects:
        layer, scale = e.settings.get("layer"), e.settings.get("scale")
        for share_scale, em, coh in (
            (0.0, e.em_before, e.coherent_before),
            (scale, e.em_after, e.coherent_after),
        ):
            rows.append(
                {
                    "layer": layer,
                    "scale": share_scale,
                    "em": em.value,
                    "em_low": em.low,
                    "em_high": em.high,
                    "coherent": coh.value,
                    "coherent_low": coh.low,
                    "coherent_high": coh.high,
                }
            )
    df = pd.DataFrame(rows).drop_duplicates(["layer", "scale"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for layer, group in df.sort_values("scale").groupby("layer"):
        for ax, metric in zip(axes, ("em", "coherent")):
            line = ax.plot(group["scale"], group[metric], marker="o", label=f"layer {layer}")[0]
            ax.fill_between(
                group["scale"],
                group[f"{metric}_low"].astype(float),
                group[f"{metric}_high"].astype(float),
                color=line.get_color(),
                alpha=0.2,
            )
    for ax, name in zip(axes, ("EM share", "coherent share")):
        ax.set_xlabel("steering scale (0 = unsteered)")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title or "steering sweep (95% Wilson intervals)")
    from misdirection.plotting import save_figure

    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Transfer


@contextlib.contextmanager
def _target_model(base: LanguageModel, adapter: TransferTarget) -> Iterator[LanguageModel]:
    """The base model, a given LoadedModel, or the base with an adapter attached (removed on exit)."""
    from misdirection.models import LoadedModel, adapter_attached

    if adapter is None or adapter == "" or adapter == []:
        yield base
        return
    if isinstance(adapter, LoadedModel):
        yield adapter
        return
    # Attaching swaps the base's ``.model`` and back, which a LoadedModel allows.
    with adapter_attached(cast("LoadedModel", base), adapter) as lm:
        yield lm


def transfer(
    base: LanguageModel | str,
    direction_set: DirectionsLike,
    targets: Mapping[str, TransferTarget],
    source_layer: int,
    questions: Iterable[Any],
    judge: Judge | str | None,
    *,
    modes: Sequence[str] = ("layerwise", "single"),
    layers: Literal["all"] | Sequence[int] = "all",
    random_controls: int = 0,
    first_control_seed: int = 0,
    control_kind: ControlKind | Literal["auto"] = "isotropic",
    out: str | Path | None = None,
    loader: Callable[[str], LanguageModel] | None = None,
    **engine_options: Any,
) -> Results:
    """Ablate a direction from each target (layer-wise and/or single), beside random controls.

    ``base``: a model spec (loaded with ``loader``, default :func:`misdirection.models.load_model`)
    or a LoadedModel. ``targets``: ``{name: adapter}`` where adapter is a PEFT folder (or list),
    None / "" for the base itself, or a LoadedModel. One effect per (target, mode), each with its
    ``random_controls`` controls of kind ``control_kind`` (``auto``: variance-matched when the
    direction's answer activations are on disk, see :func:`resolve_control_kind`). With ``out`` every condition is cached
    in ``out`` (one folder per target) and the effects are written to ``out/transfer.csv`` and
    ``out/results.json``.
    """
    from misdirection.direction_set import as_direction_set
    from misdirection.interventions import Ablate, check_ablation_mode

    judge = resolve_judge(judge)
    questions = list(questions)
    if not targets:
        raise ConfigError("transfer needs at least one target")
    if not modes:
        raise ConfigError("transfer needs at least one ablation mode (layerwise, single)")
    checked = [check_ablation_mode(m) for m in modes]
    if random_controls < 0:
        raise ConfigError(f"the number of random controls must be >= 0, got {random_controls}")
    ds = as_direction_set(direction_set)
    check_layer(source_layer, ds.n_layers, "source layer")
    control_kind = resolve_control_kind(control_kind, Ablate(ds, layers))
    if isinstance(base, str):
        from misdirection.models import load_model

        base = (loader or load_model)(base)
    activations = (
        control_activations(ds) if random_controls and control_kind == "variance-matched" else None
    )

    def ablation(mode: Literal["layerwise", "single"]) -> Ablate:
        return Ablate(ds, layers, mode, source_layer if mode == "single" else None)

    from misdirection.engine import check_intervention

    for mode in checked:  # widths and layers, before any sampling
        check_intervention(base, ablation(mode))
    effects: list[Effect] = []
    conditions: list[ConditionResult] = []
    judge_name = judge.name
    policy = engine_options.get("policy") or EffectPolicy()
    for target, adapter in targets.items():
        with _target_model(base, adapter) as lm:
            sub = None if out is None else Path(out) / target
            engine = make_engine(lm, questions, judge, out=sub, **engine_options)
            before = engine.run(target, "organism" if adapter else "base")
            effects += ablation_effects(
                engine,
                ds,
                before,
                target,
                source_layer,
                modes=checked,
                layers=layers,
                random_controls=random_controls,
                first_control_seed=first_control_seed,
                control_kind=control_kind,
                activations=activations,
            )
            conditions.extend(engine.results.values())
    results = Results(
        judge=JudgeInfo(name=judge_name), policy=policy, conditions=conditions, effects=effects
    )
    if out is not None:
        write_results(results, out, "transfer.csv")
    return results
