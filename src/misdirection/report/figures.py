"""The report's figures, drawn from ``results.json`` alone (so ``misdirection report`` can re-render)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from misdirection.plotting import save_figure  # sets the headless backend first


def _share_bars(
    ax: Any, labels: list[str], shares: list[dict[str, Any]], colour: str, title: str
) -> None:
    values = [100 * (s.get("value") or 0.0) for s in shares]
    low = [
        100
        * (
            (s.get("value") or 0.0)
            - (s.get("low") if s.get("low") is not None else s.get("value") or 0.0)
        )
        for s in shares
    ]
    high = [
        100
        * (
            (s.get("high") if s.get("high") is not None else s.get("value") or 0.0)
            - (s.get("value") or 0.0)
        )
        for s in shares
    ]
    positions = range(len(labels))
    ax.bar(positions, values, color=colour, yerr=[low, high], capsize=4, label="share (95% CI)")
    ax.set_xticks(list(positions), labels, rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("% of answers")
    ax.set_title(title)
    ax.set_ylim(0, max(5.0, max(v + h for v, h in zip(values, high)) * 1.15 if values else 5.0))
    ax.grid(axis="y", alpha=0.3)
    for x, v, s in zip(positions, values, shares):
        ax.annotate(
            f"{v:.1f}%\n(n={s.get('n', 0)})",
            (x, v),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 3),
            textcoords="offset points",
        )


def em_and_coherence(results: dict[str, Any], out: Path) -> Path | None:
    """EM and coherent shares with intervals for the base model and organisms."""
    rows = [e for e in results.get("evaluations", []) if e["kind"] in ("base", "organism")]
    if not rows:
        return None
    labels = [e["condition"] for e in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _share_bars(
        axes[0],
        labels,
        [e["summary"]["em"] for e in rows],
        "#c0392b",
        "EM share (aligned < 30, coherent > 50)",
    )
    _share_bars(
        axes[1],
        labels,
        [e["summary"]["coherent"] for e in rows],
        "#2e86c1",
        "Coherent share (coherent > 50)",
    )
    return save_figure(fig, out, dpi=110)


def steering_curves(results: dict[str, Any], out: Path) -> Path | None:
    """EM and coherence against steering scale, one line per layer."""
    steering = results.get("steering") or {}
    points = steering.get("points") or []
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for layer in sorted({p["layer"] for p in points}):
        pts = sorted((p for p in points if p["layer"] == layer), key=lambda p: p["scale"])
        scales = [p["scale"] for p in pts]
        for ax, key in zip(axes, ("em", "coherent")):
            vals = [100 * (p[key].get("value") or 0.0) for p in pts]
            lo = [100 * (p[key].get("low") or 0.0) for p in pts]
            hi = [100 * (p[key].get("high") or 0.0) for p in pts]
            line = ax.plot(scales, vals, marker="o", label=f"layer {layer}")[0]
            ax.fill_between(scales, lo, hi, color=line.get_color(), alpha=0.15)
    for ax, title in zip(axes, ("EM share vs steering scale", "Coherent share vs steering scale")):
        ax.set_xlabel("steering scale (multiple of the direction)")
        ax.set_ylabel("% of answers (95% CI band)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(title=f"direction: {steering.get('direction', '?')}", fontsize=8)
    return save_figure(fig, out, dpi=110)


def ablation_bars(results: dict[str, Any], out: Path) -> Path | None:
    """EM of each target without ablation, with each ablation mode, and with random controls."""
    rows = results.get("ablation") or []
    if not rows:
        return None
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets):
        mine = [r for r in rows if r["target"] == target]
        labels = ["no ablation"] + [r["mode"] for r in mine]
        shares = [mine[0]["em_before"]] + [r["em"] for r in mine]
        for r in mine:
            for rc in r.get("random", []):
                labels.append(f"random {r['mode']} s{rc['seed']}")
                shares.append(rc["em"])
        _share_bars(ax, labels, shares, "#8e44ad", f"EM of {target}")
    return save_figure(fig, out, dpi=110)


def cosine_per_layer(results: dict[str, Any], out: Path) -> Path | None:
    """Per-layer cosine similarity between organisms' directions."""
    cosine = results.get("cosine") or {}
    pairs = cosine.get("pairs") or []
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for pair in pairs:
        values = pair["per_layer"]
        ax.plot(range(len(values)), values, marker=".", label=f"{pair['a']} vs {pair['b']}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.set_ylabel("cosine similarity")
    ax.set_title("Cosine between organisms' mean-diff directions, per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=110)


def training_losses(results: dict[str, Any], out: Path) -> Path | None:
    """Training loss of each organism over steps."""
    runs = [t for t in results.get("training", []) if t.get("losses")]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for run in runs:
        ax.plot(
            range(1, len(run["losses"]) + 1),
            run["losses"],
            label=f"{run['organism']} ({run['recipe']})",
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=110)


FIGURES = {
    "em_coherence": em_and_coherence,
    "steering": steering_curves,
    "ablation": ablation_bars,
    "cosine": cosine_per_layer,
    "training": training_losses,
}


def draw_all(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Draw every figure the results support into ``folder``; return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    for name, draw in FIGURES.items():
        path = draw(results, folder / f"{name}.png")
        if path is not None:
            drawn[name] = path
    return drawn
