"""The report's figures, drawn from the typed results alone (so ``misdirection report`` re-renders).

Every share is drawn with its interval, and every effect figure shows coherence beside EM: a fall
of EM next to a fall of coherence is a broken model, not a removal of misalignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from misdirection.plotting import save_figure  # sets the headless backend first
from misdirection.results import ConditionResult, Effect, EffectKind, Share
from misdirection.study_results import StudyResults

EM_COLOUR = "#c0392b"
COHERENT_COLOUR = "#2e86c1"
MC_COLOUR = "#8e44ad"
CONTROL_COLOUR = "#7f8c8d"


def _percent(share: Share) -> float:
    return 100 * (share.value or 0.0)


def _yerr(shares: Sequence[Share]) -> list[list[float]]:
    """Asymmetric error bars (in points) from each share's interval; 0 where it has none."""
    below, above = [], []
    for s in shares:
        v = s.value or 0.0
        below.append(100 * (v - s.low) if s.low is not None and s.value is not None else 0.0)
        above.append(100 * (s.high - v) if s.high is not None and s.value is not None else 0.0)
    return [below, above]


def _top(shares: Sequence[Share]) -> float:
    """A y limit that leaves room for the labels above the highest interval."""
    highs = [100 * (s.high if s.high is not None else s.value or 0.0) for s in shares]
    return min(110.0, max(5.0, max(highs, default=0.0) * 1.25))


def _share_bars(ax: Any, labels: list[str], shares: list[Share], colour: str, title: str) -> None:
    positions = list(range(len(labels)))
    values = [_percent(s) for s in shares]
    ax.bar(positions, values, color=colour, yerr=_yerr(shares), capsize=4)
    ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("% of answers (95% interval)")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, _top(shares))
    ax.grid(axis="y", alpha=0.3)
    for x, v, s in zip(positions, values, shares):
        text = "n/a" if s.value is None else f"{v:.1f}%"
        ax.annotate(  # above the interval, so the label never sits on the error bar
            f"{text}\n({s.count}/{s.n})",
            (x, 100 * s.high if s.high is not None else v),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 3),
            textcoords="offset points",
        )


def model_conditions(results: StudyResults) -> list[ConditionResult]:
    """The unintervened base model and organisms, in run order."""
    return [c for c in results.conditions if c.kind in ("base", "organism")]


def conditions_figure(results: StudyResults, out: Path) -> Path | None:
    """EM, coherent and misaligned-among-coherent shares of the base model and organisms."""
    rows = model_conditions(results)
    if not rows:
        return None
    labels = [c.name for c in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    _share_bars(axes[0], labels, [c.em for c in rows], EM_COLOUR, "EM share")
    _share_bars(axes[1], labels, [c.coherent for c in rows], COHERENT_COLOUR, "Coherent share")
    _share_bars(
        axes[2],
        labels,
        [c.misaligned_coherent for c in rows],
        MC_COLOUR,
        "Misaligned among coherent answers",
    )
    return save_figure(fig, out, dpi=110)


def training_losses(results: StudyResults, out: Path) -> Path | None:
    """Training loss of each organism over optimiser steps."""
    runs = [t for t in results.training if t.losses]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for run in runs:
        ax.plot(range(1, len(run.losses) + 1), run.losses, label=f"{run.organism} ({run.recipe})")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=110)


def _controls(results: StudyResults, effect: Effect) -> list[ConditionResult]:
    """The effect's random-control conditions that the results hold."""
    if effect.controls is None:
        return []
    names = {c.name: c for c in results.conditions}
    return [names[n] for n in effect.controls.conditions if n in names]


def curve_label(effect: Effect, varying: Sequence[str]) -> str:
    """What tells one steering curve from another: its layer and any other setting that varies."""
    parts = [f"layer {effect.settings.get('layer', '?')}"]
    parts += [f"{k} {effect.settings[k]}" for k in varying if k in effect.settings]
    return ", ".join(parts)


def _varying_settings(effects: Sequence[Effect]) -> list[str]:
    keys = sorted({k for e in effects for k in e.settings} - {"layer", "scale"})
    return [k for k in keys if len({str(e.settings.get(k)) for e in effects}) > 1]


def steering_figure(results: StudyResults, effects: Sequence[Effect], out: Path) -> Path | None:
    """EM and coherent share against steering scale, one curve per layer from the scale-0 baseline.

    The unsteered answers (each effect's ``before``) sit at scale 0; the random controls (same
    norm, same layer) are grey points at their scale.
    """
    effects = [e for e in effects if e.settings.get("scale") is not None]
    if not effects:
        return None
    varying = _varying_settings(effects)
    curves: dict[str, list[Effect]] = {}
    for e in effects:
        curves.setdefault(curve_label(e, varying), []).append(e)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharex=True)
    control_drawn = False
    for label, group in curves.items():
        group = sorted(group, key=lambda e: float(e.settings["scale"]))
        scales = [0.0] + [float(e.settings["scale"]) for e in group]
        for ax, before, after in (
            (axes[0], group[0].em_before, [e.em_after for e in group]),
            (axes[1], group[0].coherent_before, [e.coherent_after for e in group]),
        ):
            shares = [before, *after]
            line = ax.plot(scales, [_percent(s) for s in shares], marker="o", label=label)[0]
            ax.fill_between(
                scales,
                [100 * (s.low if s.low is not None else s.value or 0.0) for s in shares],
                [100 * (s.high if s.high is not None else s.value or 0.0) for s in shares],
                color=line.get_color(),
                alpha=0.15,
            )
        for e in group:
            controls = _controls(results, e)
            if not controls:
                continue
            x = [float(e.settings["scale"])] * len(controls)
            for ax, shares in (
                (axes[0], [c.em for c in controls]),
                (axes[1], [c.coherent for c in controls]),
            ):
                ax.scatter(
                    x,
                    [_percent(s) for s in shares],
                    color=CONTROL_COLOUR,
                    s=14,
                    alpha=0.7,
                    zorder=3,
                    label=None if control_drawn else "random controls (same norm)",
                )
            control_drawn = True
    for ax, title in zip(axes, ("EM share vs steering scale", "Coherent share vs steering scale")):
        ax.set_xlabel("steering scale (0 = unsteered)")
        ax.set_ylabel("% of answers (95% interval band)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    # One legend: the control label is on whichever axis drew first, so gather both.
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[1].legend(handles, labels, fontsize=8)
    return save_figure(fig, out, dpi=110)


def before_after_figure(
    results: StudyResults, effects: Sequence[Effect], out: Path, title: str
) -> Path | None:
    """Grouped bars per effect: EM before/after and coherent before/after, with intervals.

    The random controls' EM after the intervention are grey dots on the EM-after bar.
    """
    if not effects:
        return None
    bars = (
        ("EM before", "em_before", "#e6b0aa"),
        ("EM after", "em_after", EM_COLOUR),
        ("coherent before", "coherent_before", "#a9cce3"),
        ("coherent after", "coherent_after", COHERENT_COLOUR),
    )
    width = 0.2
    fig, ax = plt.subplots(figsize=(min(20.0, max(7.0, 1.3 * len(effects) + 3)), 4.6))
    positions = list(range(len(effects)))
    for i, (label, field, colour) in enumerate(bars):
        shares: list[Share] = [getattr(e, field) for e in effects]
        x = [p + (i - 1.5) * width for p in positions]
        ax.bar(
            x,
            [_percent(s) for s in shares],
            width,
            color=colour,
            yerr=_yerr(shares),
            capsize=2,
            label=label,
        )
    control_drawn = False
    for p, e in zip(positions, effects):
        controls = _controls(results, e)
        if controls:
            ax.scatter(
                [p - 0.5 * width] * len(controls),
                [_percent(c.em) for c in controls],
                color=CONTROL_COLOUR,
                edgecolor="black",
                linewidth=0.4,
                s=16,
                zorder=3,
                label=None if control_drawn else "random controls: EM after",
            )
            control_drawn = True
    ax.set_xticks(positions, [e.name for e in effects], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% of answers (95% interval)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, out, dpi=110)


def _at(values: Sequence[Any] | None, i: int) -> float:
    """``values[i]`` as a float; NaN (a gap in the plotted line) where it is missing or null."""
    if not values or i >= len(values) or values[i] is None:
        return float("nan")
    return float(values[i])


def cosine_figure(results: StudyResults, out: Path) -> Path | None:
    """Per-layer cosine of each pair of organisms' directions: bootstrap band and noise ceiling.

    The ceiling (dashed, the pair's colour) is the cosine two directions reach from sampling noise
    alone; a cosine far below it is divergence, one near it is as similar as the data can show.
    """
    pairs = results.cosine.pairs if results.cosine else []
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.4))
    for pair in pairs:
        layers = list(range(len(pair.per_layer)))
        line = ax.plot(
            layers,
            [_at(pair.per_layer, i) for i in layers],
            marker=".",
            label=f"{pair.a} vs {pair.b}",
        )[0]
        low, high = pair.low, pair.high
        if low and high:
            ax.fill_between(
                layers,
                [_at(low, i) for i in layers],
                [_at(high, i) for i in layers],
                color=line.get_color(),
                alpha=0.15,
            )
        ceiling = pair.ceiling
        if ceiling:
            ax.plot(
                layers,
                [_at(ceiling, i) for i in layers],
                linestyle="--",
                color=line.get_color(),
                label=f"noise ceiling of {pair.a} vs {pair.b}",
            )
    ax.axhline(0, color="grey", lw=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-1, 1)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.set_ylabel("cosine similarity")
    ax.set_title("Cosine between organisms' directions per layer (band: bootstrap interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=110)


def curve_figure(results: StudyResults, out: Path) -> Path | None:
    """EM, coherent and misaligned shares of each organism against its training steps."""
    runs = [t for t in results.training if t.curve]
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        steps = [p.step for p in run.curve]
        for label, colour, shares in (
            ("EM", EM_COLOUR, [p.em for p in run.curve]),
            ("coherent", COHERENT_COLOUR, [p.coherent for p in run.curve]),
            ("misaligned, coherent or not", MC_COLOUR, [p.misaligned for p in run.curve]),
        ):
            values = [100 * (s.value or 0) if s is not None else float("nan") for s in shares]
            low = [100 * (s.low or 0) if s is not None else float("nan") for s in shares]
            high = [100 * (s.high or 0) if s is not None else float("nan") for s in shares]
            ax.plot(steps, values, marker="o", color=colour, label=label)
            ax.fill_between(steps, low, high, color=colour, alpha=0.15)
        ax.set_title(f"{run.organism} ({run.recipe})")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("% of answers")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, out, dpi=110)


def reliability_figure(results: StudyResults, out: Path) -> Path | None:
    """Split-half reliability per layer of every direction, with and without massive dimensions.

    A reliability carried by a model's few massive dimensions (dashed line far below the solid
    one) is theirs, not the direction's.
    """
    directions = [d for d in results.directions if d.split_half]
    if not directions:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.4))
    for d in directions:
        layers = list(range(len(d.split_half)))
        line = ax.plot(layers, [_at(d.split_half, i) for i in layers], marker=".", label=d.organism)
        if d.split_half_without_massive:
            ax.plot(
                layers,
                [_at(d.split_half_without_massive, i) for i in layers],
                linestyle="--",
                color=line[0].get_color(),
                label=f"{d.organism} without massive dimensions",
            )
    ax.axhline(0, color="grey", lw=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-1, 1)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.set_ylabel("split-half reliability (Spearman-Brown)")
    ax.set_title("Reliability of each direction per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=110)


def effects_of(results: StudyResults, kind: EffectKind) -> list[Effect]:
    return [e for e in results.effects if e.kind == kind]


def draw_all(results: StudyResults, folder: Path, titles: dict[EffectKind, str]) -> dict[str, Path]:
    """Draw every figure the results support into ``folder``; return name -> path.

    ``titles``: effect kind -> section title (one figure per kind that has effects).
    """
    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path | None] = {
        "conditions": conditions_figure(results, folder / "conditions.png"),
        "training": training_losses(results, folder / "training.png"),
        "cosine": cosine_figure(results, folder / "cosine.png"),
        "reliability": reliability_figure(results, folder / "reliability.png"),
        "curve": curve_figure(results, folder / "curve.png"),
    }
    for kind, title in titles.items():
        effects = effects_of(results, kind)
        out = folder / f"effects-{kind}.png"
        drawn[f"effects-{kind}"] = (
            steering_figure(results, effects, out)
            if kind == "steer"
            else before_after_figure(results, effects, out, title)
        )
    return {name: path for name, path in drawn.items() if path is not None}
