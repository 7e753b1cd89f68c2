"""Evaluate a model: sample answers, judge them, summarise EM with intervals; sweeps and transfer.

* :func:`evaluate` — one condition (a model, optionally with an intervention): sample, judge,
  :func:`misdirection.metrics.summarize`. With an ``out`` folder it is resumable: the answers table
  is reused when its recorded settings match (no resampling), and judging resumes in place.
* :func:`steering_sweep` — steering with one direction set over layers x scales: EM and coherence
  per point, and :func:`plot_sweep` for the curves.
* :func:`transfer` — ablate one organism's direction from other organisms (targets): EM before and
  after, % reduction with a stratified bootstrap interval, and the same for random controls.

Everything that can fail cheaply (the judge, layers, direction widths, adapter selections) is
checked before the first answer is sampled.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from misdirection.errors import ConfigError, check_layer
from misdirection.metrics import Summary, Thresholds, summarize

#: File names inside an evaluation folder.
ANSWERS_FILE = "answers.parquet"
SUMMARY_FILE = "summary.json"
SETTINGS_FILE = "settings.json"

#: Rubrics the EM summary needs.
REQUIRED_RUBRICS = ("aligned", "coherent")


@dataclass
class Evaluation:
    """The judged answers table, its summary, and where they were written (empty without ``out``)."""

    table: pd.DataFrame
    summary: Summary
    settings: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    resampled: bool = True


# ----------------------------------------------------------------------------------------------
# Small helpers


def parse_layers(text: str | int | Sequence[int]) -> str | list[int]:
    """``"all"`` -> ``"all"``; ``"3,5,10-12"`` -> ``[3, 5, 10, 11, 12]`` (sorted, unique)."""
    if isinstance(text, int) and not isinstance(text, bool):
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


def _field(q: Any, name: str, default: Any = None) -> Any:
    return q.get(name, default) if isinstance(q, Mapping) else getattr(q, name, default)


def questions_sha256(questions: Iterable[Any]) -> str:
    """Hash of what sampling reads from the questions (ids, paraphrases, system prompts, counts)."""
    items = [
        [
            str(_field(q, "id")),
            [str(p) for p in _field(q, "paraphrases") or []],
            _field(q, "system") or "",
            _field(q, "samples_per_paraphrase", 1),
        ]
        for q in questions
    ]
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def question_prompts(questions: Iterable[Any]) -> dict[str, dict[str, str]]:
    """``{question id: judge_prompts}`` of the items that carry their own judge prompts."""
    return {
        str(_field(q, "id")): dict(_field(q, "judge_prompts"))
        for q in questions
        if _field(q, "judge_prompts")
    }


def resolve_judge(judge: Any, **options: Any) -> Any:
    """A Judge object as is; a spec string through :func:`get_judge`; None -> :func:`default_judge`."""
    from misdirection.judge import default_judge, get_judge

    if judge is None:
        return default_judge()
    if isinstance(judge, str):
        return get_judge(judge, **options)
    if not callable(getattr(judge, "score", None)) or not isinstance(
        getattr(judge, "name", None), str
    ):
        raise ConfigError(
            f"judge must be a spec string or have .name and .score(); got {type(judge).__name__}"
        )
    return judge


def check_intervention(lm: Any, intervention: Any) -> None:
    """Install and remove ``intervention`` once: layers, widths and adapter selections fail here."""
    if intervention is None:
        return
    if not callable(getattr(intervention, "apply", None)) or not callable(
        getattr(intervention, "spec", None)
    ):
        raise ConfigError(
            "an intervention needs spec() -> dict and apply(model) -> context manager"
        )
    with intervention.apply(lm.model):
        pass


def with_directions(intervention: Any, directions: Any) -> Any:
    """A copy of a Steer / Ablate (or a Compose holding one) that uses other directions.

    Used for random controls: the same intervention with the reference replaced by a control set.
    """
    parts = getattr(intervention, "parts", None)
    if parts is not None:
        swapped = copy.copy(intervention)
        hits = [i for i, p in enumerate(parts) if hasattr(p, "directions")]
        if len(hits) != 1:
            raise ConfigError(
                f"random controls need exactly one direction-based intervention; this one has {len(hits)}"
            )
        swapped.parts = list(parts)
        swapped.parts[hits[0]] = with_directions(parts[hits[0]], directions)
        return swapped
    if not hasattr(intervention, "directions"):
        raise ConfigError(
            f"random controls need a steering or ablation intervention, not {type(intervention).__name__}"
        )
    swapped = copy.copy(intervention)
    swapped.directions = directions
    return swapped


def _spec_text(intervention: Any) -> str:
    return "" if intervention is None else json.dumps(intervention.spec(), sort_keys=True)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _check_rubrics(rubrics: Sequence[Any]) -> list[Any]:
    names = [r if isinstance(r, str) else getattr(r, "name", "") for r in rubrics]
    missing = [r for r in REQUIRED_RUBRICS if r not in names]
    if missing:
        raise ConfigError(
            f"the EM summary needs rubrics {', '.join(REQUIRED_RUBRICS)}; missing {', '.join(missing)}"
        )
    return list(rubrics)


# ----------------------------------------------------------------------------------------------
# One evaluation


def evaluate(
    lm: Any,
    questions: Iterable[Any],
    judge: Any,
    *,
    n: int | None,
    max_new_tokens: int,
    seed: int,
    intervention: Any = None,
    rubrics: Sequence[Any] = REQUIRED_RUBRICS,
    out: str | Path | None = None,
    thresholds: Thresholds = Thresholds(),
    custom_rubrics: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    temperature: float = 1.0,
    use_question_prompts: bool = True,
    label: str = "",
    n_resamples: int = 2000,
    bootstrap_seed: int = 0,
    progress: bool = True,
) -> Evaluation:
    """Sample answers with ``lm`` (under ``intervention``), judge them, summarise EM.

    ``judge`` is a Judge, a spec string (``openai:MODEL``...) or None (the default judge); it is
    built *before* sampling, so a judge that cannot run (no API key) fails before any work.
    ``n`` answers per paraphrase (None: each question's ``samples_per_paraphrase``).
    With ``out`` (a folder) the run writes ``answers.parquet`` (judged in place, resumably),
    ``settings.json`` and ``summary.json``; a re-run with the same settings reuses the answers and
    judges only what is missing; a run with different settings refuses to touch the folder.
    ``use_question_prompts``: questions' own ``judge_prompts`` replace the rubric prompt for their rows.
    ``custom_rubrics``: ``{name: Rubric}`` (e.g. from :func:`misdirection.judge.rubrics.load_rubrics`).
    """
    from misdirection.judge.rubrics import resolve_rubrics
    from misdirection.judge.scoring import judge_table, read_table
    from misdirection.sample import sample_answers, write_answers

    judge = resolve_judge(judge)
    rubrics = resolve_rubrics(_check_rubrics(rubrics), custom_rubrics)  # unknown rubric: fail now
    questions = list(questions)
    prompts = question_prompts(questions) if use_question_prompts else None
    check_intervention(lm, intervention)
    settings = {
        "model": str(getattr(lm, "spec", "")),
        "adapter": str(getattr(lm, "adapter_spec", "") or ""),
        "intervention": _spec_text(intervention),
        "questions_sha256": questions_sha256(questions),
        "n": n,
        "max_new_tokens": int(max_new_tokens),
        "seed": int(seed),
        "temperature": float(temperature),
    }

    folder = Path(out) if out is not None else None
    answers_path = folder / ANSWERS_FILE if folder is not None else None
    resampled = True
    if answers_path is not None and answers_path.exists():
        _check_settings(folder, settings)  # type: ignore[arg-type]
        table = read_table(answers_path)
        resampled = False
    else:
        table = sample_answers(
            lm,
            questions,
            n,
            max_new_tokens,
            seed,
            batch_size=batch_size,
            temperature=temperature,
            intervention=intervention,
            progress=progress,
        )
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            _write_json(folder / SETTINGS_FILE, settings)
            write_answers(table, str(answers_path))
    table = judge_table(
        answers_path if answers_path is not None else table,
        judge,
        rubrics,
        question_prompts=prompts,
        progress=progress,
    )
    summary = summarize(
        table, thresholds=thresholds, n_resamples=n_resamples, seed=bootstrap_seed, label=label
    )
    summary = replace(summary, extra={**summary.extra, **settings, "judge": judge.name})
    paths: dict[str, Path] = {}
    if folder is not None:
        _write_json(folder / SUMMARY_FILE, summary.to_dict())
        paths = {
            "answers": answers_path,
            "summary": folder / SUMMARY_FILE,
            "settings": folder / SETTINGS_FILE,
        }  # type: ignore[dict-item]
    return Evaluation(
        table=table, summary=summary, settings=settings, paths=paths, resampled=resampled
    )


def _check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse to reuse answers sampled with other settings (and never overwrite them)."""
    path = folder / SETTINGS_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ConfigError(
            f"{folder / ANSWERS_FILE} exists but {path} is missing or unreadable, so it cannot be reused; "
            "choose another --out folder"
        ) from None
    differ = [k for k in settings if recorded.get(k) != settings[k]]
    if differ:
        k = differ[0]
        raise ConfigError(
            f"{folder / ANSWERS_FILE} was sampled with other settings ({k}: {recorded.get(k)!r} there, "
            f"{settings[k]!r} now); choose another --out folder to keep both"
        )


def evaluate_controls(
    lm: Any,
    questions: Iterable[Any],
    judge: Any,
    intervention: Any,
    k: int,
    *,
    out: str | Path | None = None,
    first_seed: int = 0,
    **kwargs: Any,
) -> dict[str, Evaluation]:
    """The intervention and ``k`` random controls of it (same norm per layer, seeds ``first_seed..``).

    Returns ``{"reference": ..., "random-<seed>": ...}``; with ``out`` the reference is written to
    ``out`` and each control to ``out/random-<seed>``.
    """
    from misdirection.directions import random_controls

    judge = resolve_judge(judge)
    questions = list(questions)
    reference = _direction_part(intervention)
    controls = [
        with_directions(intervention, ds)
        for ds in random_controls(reference.directions, k, first_seed)
    ]
    for c in controls:  # every control is checked before any sampling
        check_intervention(lm, c)
    folder = Path(out) if out is not None else None
    kwargs.pop("label", None)
    results = {
        "reference": evaluate(
            lm, questions, judge, intervention=intervention, out=folder, label="reference", **kwargs
        )
    }
    for i, control in enumerate(controls):
        name = f"random-{first_seed + i}"
        results[name] = evaluate(
            lm,
            questions,
            judge,
            intervention=control,
            out=None if folder is None else folder / name,
            label=name,
            **kwargs,
        )
    return results


def _direction_part(intervention: Any) -> Any:
    if hasattr(intervention, "directions"):
        return intervention
    parts = [p for p in getattr(intervention, "parts", []) if hasattr(p, "directions")]
    if len(parts) != 1:
        raise ConfigError("random controls need exactly one steering or ablation intervention")
    return parts[0]


# ----------------------------------------------------------------------------------------------
# Steering sweep


def _point(summary: Summary) -> dict[str, Any]:
    return {
        "n": summary.n,
        "em": summary.em.value,
        "em_low": summary.em.low,
        "em_high": summary.em.high,
        "em_count": summary.em.count,
        "coherent": summary.coherent.value,
        "coherent_low": summary.coherent.low,
        "coherent_high": summary.coherent.high,
        "n_null_aligned": summary.n_null_aligned,
        "n_null_coherent": summary.n_null_coherent,
    }


def steering_sweep(
    lm: Any,
    questions: Iterable[Any],
    judge: Any,
    directions: Any,
    layers: Sequence[int],
    scales: Sequence[float],
    *,
    n: int | None,
    max_new_tokens: int,
    seed: int,
    source_layer: int | None = None,
    normalize: bool = False,
    out: str | Path | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """EM and coherence when steering at each layer with each scale: one row per (layer, scale).

    ``directions``: a DirectionSet, a tensor or a direction file; layer ``l`` is steered with row
    ``l`` (or row ``source_layer`` everywhere). Columns: layer, scale, n, em, em_low, em_high,
    em_count, coherent, coherent_low, coherent_high, n_null_aligned, n_null_coherent, out.
    With ``out``, point (l, s) lives in ``out/L<l>_s<s>`` (resumable) and the table in ``out/sweep.csv``.
    """
    from misdirection.directions import as_direction_set
    from misdirection.interventions import Steer

    judge = resolve_judge(judge)
    questions = list(questions)
    ds = as_direction_set(directions)
    layer_list = [check_layer(int(layer), lm.view.n_layers, "steering layer") for layer in layers]
    scale_list = [float(s) for s in scales]
    if not layer_list or not scale_list:
        raise ConfigError("a steering sweep needs at least one layer and one scale")
    steers = {
        (layer, scale): Steer(ds, [layer], scale, source_layer=source_layer, normalize=normalize)
        for layer in layer_list
        for scale in scale_list
    }
    for layer in layer_list:  # widths, layer counts and zero norms, before any sampling
        steers[(layer, scale_list[0])].vectors(lm.model)
    folder = Path(out) if out is not None else None
    eval_kwargs = {"n": n, "max_new_tokens": max_new_tokens, "seed": seed, **kwargs}
    rows = []
    for (layer, scale), steer in steers.items():
        sub = None if folder is None else folder / f"L{layer}_s{scale:g}"
        label = f"layer {layer} scale {scale:g}"
        ev = evaluate(lm, questions, judge, intervention=steer, out=sub, label=label, **eval_kwargs)
        rows.append(
            {
                "layer": layer,
                "scale": scale,
                **_point(ev.summary),
                "out": "" if sub is None else str(sub),
            }
        )
    df = pd.DataFrame(rows)
    if folder is not None:
        df.to_csv(folder / "sweep.csv", index=False)
    return df


def plot_sweep(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """EM and coherent share against scale, one line (with its interval band) per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for layer, group in df.sort_values("scale").groupby("layer"):
        for ax, metric in zip(axes, ("em", "coherent")):
            line = ax.plot(group["scale"], group[metric], marker="o", label=f"layer {layer}")[0]
            ax.fill_between(
                group["scale"],
                group[f"{metric}_low"],
                group[f"{metric}_high"],
                color=line.get_color(),
                alpha=0.2,
            )
    for ax, name in zip(axes, ("EM share", "coherent share")):
        ax.set_xlabel("steering scale")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title or "steering sweep (95% bootstrap intervals)")
    from misdirection.plotting import save_figure

    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Transfer


@contextlib.contextmanager
def _target_model(base: Any, adapter: Any) -> Iterator[Any]:
    """The base model, a given LoadedModel, or the base with an adapter attached (removed on exit)."""
    from misdirection.models import LoadedModel, adapter_attached

    if adapter is None or adapter == "" or adapter == []:
        yield base
        return
    if isinstance(adapter, LoadedModel):
        yield adapter
        return
    with adapter_attached(base, adapter) as lm:
        yield lm


def _reduction_row(
    before: Evaluation, after: Evaluation, thresholds: Thresholds, seed: int
) -> dict[str, Any]:
    from misdirection.study.effects import reduction

    r = reduction(before.table, after.table, thresholds, seed=seed)
    return {
        "em_after": after.summary.em.value,
        "em_after_low": after.summary.em.low,
        "em_after_high": after.summary.em.high,
        "coherent_after": after.summary.coherent.value,
        "reduction": r["value"],
        "reduction_low": r["low"],
        "reduction_high": r["high"],
    }


def transfer(
    base: Any,
    direction_set: Any,
    targets: Mapping[str, Any],
    source_layer: int,
    questions: Iterable[Any],
    judge: Any,
    *,
    modes: Sequence[str] = ("layerwise", "single"),
    layers: str | Sequence[int] = "all",
    random_controls: int = 0,
    first_control_seed: int = 0,
    n: int | None,
    max_new_tokens: int,
    seed: int,
    out: str | Path | None = None,
    thresholds: Thresholds = Thresholds(),
    loader: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """EM of each target with and without ablating a direction, and the same for random controls.

    ``base``: a model spec (loaded with ``loader``, default :func:`misdirection.models.load_model`)
    or a LoadedModel. ``targets``: ``{name: adapter}`` where adapter is a PEFT folder (or list),
    None / "" for the base itself, or a LoadedModel. ``direction_set``: a DirectionSet or file.
    ``modes``: ``layerwise`` (each layer its own row) and/or ``single`` (row ``source_layer`` at
    every layer). One row per (target, mode, condition): condition ``direction`` or ``random``
    (with its ``control_seed``); columns em_before(_low/_high), coherent_before, em_after(_low/_high),
    coherent_after, reduction, reduction_low, reduction_high (relative, from
    :func:`misdirection.study.effects.reduction`; None when EM before is 0).
    With ``out``, each condition is evaluated in ``out/<target>/<condition>`` (resumable) and the
    table is written to ``out/transfer.csv`` and ``out/transfer.json``.
    """
    from misdirection.directions import as_direction_set
    from misdirection.directions import random_controls as make_controls
    from misdirection.interventions import Ablate

    judge = resolve_judge(judge)
    questions = list(questions)
    if not targets:
        raise ConfigError("transfer needs at least one target")
    bad = [m for m in modes if m not in ("layerwise", "single")]
    if bad or not modes:
        raise ConfigError(f"ablation modes must be layerwise and/or single, got {list(modes)}")
    if random_controls < 0:
        raise ConfigError(f"the number of random controls must be >= 0, got {random_controls}")
    ds = as_direction_set(direction_set)
    check_layer(source_layer, ds.n_layers, "source layer")
    if isinstance(base, str):
        from misdirection.models import load_model

        base = (loader or load_model)(base)
    controls = make_controls(ds, random_controls, first_control_seed) if random_controls else []

    def ablation(directions: Any, mode: str) -> Any:
        return Ablate(directions, layers, mode, source_layer if mode == "single" else None)

    for mode in modes:  # widths and layers, before any sampling
        check_intervention(base, ablation(ds, mode))
    folder = Path(out) if out is not None else None
    eval_kwargs = {
        "n": n,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "thresholds": thresholds,
        **kwargs,
    }

    def run(lm: Any, target: str, condition: str, intervention: Any) -> Evaluation:
        sub = None if folder is None else folder / target / condition
        label = f"{target} {condition}"
        return evaluate(
            lm, questions, judge, intervention=intervention, out=sub, label=label, **eval_kwargs
        )

    rows: list[dict[str, Any]] = []
    for target, adapter in targets.items():
        with _target_model(base, adapter) as lm:
            before = run(lm, target, "none", None)
            common = {
                "target": target,
                "adapter": str(getattr(lm, "adapter_spec", "") or ""),
                "em_before": before.summary.em.value,
                "em_before_low": before.summary.em.low,
                "em_before_high": before.summary.em.high,
                "coherent_before": before.summary.coherent.value,
            }
            for mode in modes:
                after = run(lm, target, f"ablate-{mode}", ablation(ds, mode))
                rows.append(
                    {
                        **common,
                        "mode": mode,
                        "condition": "direction",
                        "control_seed": None,
                        **_reduction_row(before, after, thresholds, seed),
                    }
                )
                for i, control in enumerate(controls):
                    cseed = first_control_seed + i
                    after = run(
                        lm, target, f"ablate-{mode}-random-{cseed}", ablation(control, mode)
                    )
                    rows.append(
                        {
                            **common,
                            "mode": mode,
                            "condition": "random",
                            "control_seed": cseed,
                            **_reduction_row(before, after, thresholds, seed),
                        }
                    )
    df = pd.DataFrame(rows)
    df["control_seed"] = df["control_seed"].astype("Int64")
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        df.to_csv(folder / "transfer.csv", index=False)
        _write_json(folder / "transfer.json", json.loads(df.to_json(orient="records")))
    return df


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def transfer_table(df: pd.DataFrame, title: str = "transfer of the direction (ablation)") -> Any:
    """A rich table: per target and mode, EM before/after, reduction [CI], random-control reductions."""
    from rich.table import Table

    table = Table(
        title=title,
        caption="reduction = (EM before - EM after) / EM before; 95% stratified bootstrap CI",
    )
    for col in (
        "target",
        "mode",
        "EM before",
        "EM after",
        "reduction [CI]",
        "random controls: reduction",
    ):
        table.add_column(col, justify="left" if col in ("target", "mode") else "right")
    for (target, mode), group in df.groupby(["target", "mode"], sort=False):
        ref = group[group["condition"] == "direction"].iloc[0]
        rand = pd.to_numeric(
            group.loc[group["condition"] == "random", "reduction"], errors="coerce"
        ).dropna()
        if len(group[group["condition"] == "random"]) == 0:
            random_text = "-"
        elif rand.empty:
            random_text = "n/a (EM before 0)"
        else:
            random_text = f"mean {_pct(rand.mean())} (min {_pct(rand.min())}, max {_pct(rand.max())}, K={len(rand)})"
        reduction_text = (
            "n/a (EM before 0)"
            if ref["reduction"] is None or pd.isna(ref["reduction"])
            else f"{_pct(ref['reduction'])} [{_pct(ref['reduction_low'])}, {_pct(ref['reduction_high'])}]"
        )
        table.add_row(
            str(target),
            str(mode),
            f"{_pct(ref['em_before'])} [{_pct(ref['em_before_low'])}, {_pct(ref['em_before_high'])}]",
            f"{_pct(ref['em_after'])} [{_pct(ref['em_after_low'])}, {_pct(ref['em_after_high'])}]",
            reduction_text,
            random_text,
        )
    return table


def sweep_table(df: pd.DataFrame) -> Any:
    """A rich table of a steering sweep: one row per (layer, scale)."""
    from rich.table import Table

    table = Table(title="steering sweep (share [95% CI])")
    for col in ("layer", "scale", "n", "EM", "coherent"):
        table.add_column(col, justify="right")
    for row in df.itertuples():
        table.add_row(
            str(row.layer),
            f"{row.scale:g}",
            str(row.n),
            f"{_pct(row.em)} [{_pct(row.em_low)}, {_pct(row.em_high)}]",
            f"{_pct(row.coherent)} [{_pct(row.coherent_low)}, {_pct(row.coherent_high)}]",
        )
    return table
