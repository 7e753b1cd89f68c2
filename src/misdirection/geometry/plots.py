"""Figures of the geometry suite (matplotlib, Agg backend: no display needed).

Every figure has axis labels, a title, a legend where colours carry meaning and a colour bar with
its range for heatmaps. Functions take plain arrays and a path, write a PNG and return the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

DPI = 130


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight" if tight else None)
    _plt().close(fig)
    return path


def _tick_step(n: int, max_labels: int = 40) -> int:
    return max(1, int(np.ceil(n / max_labels)))


def _cluster_colours(names: Sequence[str], clusters: Mapping[str, Sequence[str]] | None):
    """Per-vector colour and label lists, one colour per cluster (grey = unclustered)."""
    plt = _plt()
    cmap = plt.get_cmap("tab10" if clusters is None or len(clusters) <= 10 else "tab20")
    label = {n: "unclustered" for n in names}
    colour = {"unclustered": "0.55"}
    for c, (cname, members) in enumerate((clusters or {}).items()):
        colour[cname] = cmap(c % cmap.N)
        for m in members:
            label[m] = cname
    return [colour[label[n]] for n in names], [label[n] for n in names], colour


def heatmap(
    M: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    path: str | Path,
    *,
    title: str,
    cbar_label: str,
    vmin: float,
    vmax: float,
    cmap: str = "RdBu_r",
    annotate: bool | None = None,
    fmt: str = "{:.2f}",
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """Heatmap with a colour bar fixed to [vmin, vmax] and the range written in its label."""
    import textwrap

    plt = _plt()
    M = np.asarray(M, dtype=float)
    r, c = M.shape
    cell = min(0.6, 12.0 / max(r, c))
    w, h = max(4.5, cell * c + 3.2), max(3.5, cell * r + 2.0)
    fig, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(M, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal")
    cb = fig.colorbar(im, ax=ax, fraction=0.046 * max(1.0, r / max(c, 1)), pad=0.04)
    cb.set_label(f"{cbar_label} (colour range {vmin:g} to {vmax:g})")
    sr, sc = _tick_step(r), _tick_step(c)
    fs = 9 if max(r, c) <= 20 else 7 if max(r, c) <= 40 else 6
    ax.set_xticks(
        range(0, c, sc),
        [col_names[k] for k in range(0, c, sc)],
        rotation=60,
        ha="right",
        fontsize=fs,
    )
    ax.set_yticks(range(0, r, sr), [row_names[k] for k in range(0, r, sr)], fontsize=fs)
    if annotate if annotate is not None else max(r, c) <= 12:
        for y in range(r):
            for x in range(c):
                if np.isfinite(M[y, x]):
                    dark = abs(M[y, x] - (vmin + vmax) / 2) > 0.6 * (vmax - vmin) / 2
                    ax.text(
                        x,
                        y,
                        fmt.format(M[y, x]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )
    ax.set_title(textwrap.fill(title, 55))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def spectrum_plot(
    energy: np.ndarray,
    rank_corr: np.ndarray,
    path: str | Path,
    null_band: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Energy share of each singular direction (with the random-vector 95% band) and the
    rank-k reconstruction correlation."""
    plt = _plt()
    k = np.arange(1, len(energy) + 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    from matplotlib.ticker import MaxNLocator

    a1.bar(k, energy, color="tab:blue", label="observed", zorder=1)
    if null_band is not None:
        lo, hi = np.asarray(null_band[0]), np.asarray(null_band[1])
        a1.errorbar(
            k,
            (lo + hi) / 2,
            yerr=(hi - lo) / 2,
            fmt="none",
            ecolor="tab:orange",
            elinewidth=2,
            capsize=3 if len(k) <= 30 else 0,
            zorder=2,
            label="random directions, 95% range",
        )
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set_xlabel("singular direction k")
    a1.set_ylabel("share of squared singular values")
    a1.set_title("SVD spectrum of the unit vectors")
    a1.legend()
    a2.plot(k, rank_corr, marker="o", ms=3, color="tab:green", label="observed")
    a2.axhline(1.0, color="0.6", lw=0.8, ls="--")
    a2.set_xlabel("rank k of the reconstruction")
    a2.set_ylabel("correlation with the original similarities")
    a2.set_title("Rank-k reconstruction of the similarity matrix")
    a2.legend(loc="lower right")
    return _save(fig, path)


def scatter2d(
    coords: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    clusters: Mapping[str, Sequence[str]] | None = None,
    unit_circle: bool = False,
) -> Path:
    """2-D scatter of the vectors coloured by cluster, with names written beside small sets."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    _, labels, palette = _cluster_colours(names, clusters)
    coords = np.asarray(coords, dtype=float)
    if coords.shape[1] == 1:
        coords = np.column_stack([coords[:, 0], np.zeros(len(coords))])
    for lab in dict.fromkeys(labels):
        sel = [i for i, x in enumerate(labels) if x == lab]
        ax.scatter(
            coords[sel, 0],
            coords[sel, 1],
            color=palette[lab],
            label=lab,
            s=36,
            edgecolor="black",
            linewidth=0.4,
        )
    if len(names) <= 30:
        for i, n in enumerate(names):
            ax.annotate(n, coords[i], textcoords="offset points", xytext=(4, 3), fontsize=8)
    if unit_circle:
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="0.7", lw=0.8, label="unit circle (inside the plane)")
        ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.6, zorder=0)
    ax.axvline(0, color="0.85", lw=0.6, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def dendrogram_plot(
    linkage: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    title: str,
    clusters: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Dendrogram with angular merge heights; leaf labels coloured by cluster."""
    from scipy.cluster.hierarchy import dendrogram

    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(min(18, max(7, 0.2 * n + 4)), 5))
    dendrogram(
        linkage,
        labels=list(names),
        ax=ax,
        color_threshold=0,
        above_threshold_color="0.3",
        leaf_font_size=9 if n <= 30 else 6,
    )
    colours, _, palette = _cluster_colours(names, clusters)
    col = dict(zip(names, colours))
    for tick in ax.get_xticklabels():
        tick.set_color(col.get(tick.get_text(), "black"))
    if clusters:
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(color=palette[c], label=c) for c in clusters],
            title="cluster",
            fontsize=8,
        )
    ax.set_ylabel("merge height (angle, degrees)")
    ax.set_xlabel("vector")
    ax.set_title(title)
    return _save(fig, path)


def null_histograms(entries: Sequence[dict], path: str | Path) -> Path:
    """One panel per statistic: random-vector and permuted-label null histograms and the
    observed value as a vertical line, percentile in the panel title."""
    plt = _plt()
    k = len(entries)
    cols = min(3, k)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    # A fixed layout: constrained/tight layout engines cost more than all the drawing here.
    fig.subplots_adjust(
        left=0.07, right=0.98, bottom=0.08, top=1 - 0.95 / (3.6 * rows), hspace=0.65, wspace=0.28
    )
    for ax, e in zip(axes.ravel(), entries):
        for key, colour, lab in (
            ("random", "tab:orange", "random vectors"),
            ("permuted", "tab:purple", "permuted labels"),
        ):
            s = e.get(key)
            if s is not None and np.isfinite(s).any():
                ax.hist(
                    s[np.isfinite(s)],
                    bins=30,
                    color=colour,
                    alpha=0.55,
                    label=lab,
                    histtype="stepfilled",
                )
        ax.axvline(e["observed"], color="black", lw=2, label=f"observed = {e['observed']:.3g}")
        pct = e.get("percentile_text", "")
        ax.set_title(f"{e['name']}\n{pct}", fontsize=9)
        ax.set_xlabel("value")
        ax.set_ylabel("null draws")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    fig.suptitle("Observed statistics against their null distributions")
    return _save(fig, path, tight=False)


def dose_response_plot(curves: Mapping[str, Mapping[str, list]], path: str | Path) -> Path:
    """EM rate against steering scale: one panel per source direction, one line per target (same
    colour for a target in every panel), with 95% Wilson intervals as bands."""
    plt = _plt()
    sources = sorted({c["source"] for c in curves.values()})
    targets = sorted({c["target"] for c in curves.values()})
    cmap = plt.get_cmap("tab10" if len(targets) <= 10 else "tab20")
    colour = {t: cmap(i % cmap.N) for i, t in enumerate(targets)}
    cols = min(3, len(sources))
    rows = int(np.ceil(len(sources) / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False, sharey=True
    )
    for ax, src in zip(axes.ravel(), sources):
        for c in curves.values():
            if c["source"] != src:
                continue
            x = np.asarray(c["scale"], dtype=float)
            own = c["target"] == src
            ax.plot(
                x,
                c["em_rate"],
                marker="o",
                ms=4,
                color=colour[c["target"]],
                lw=2.4 if own else 1.4,
                label=f"{c['target']}{' (own domain)' if own else ''}",
            )
            lo, hi = np.asarray(c["ci_low"], float), np.asarray(c["ci_high"], float)
            if np.isfinite(lo).any():
                ax.fill_between(x, lo, hi, color=colour[c["target"]], alpha=0.12)
        ax.set_title(f"steering with the {src} direction")
        ax.set_xlabel("steering scale")
        ax.set_ylabel("EM rate (share of answers)")
        ax.legend(fontsize=8, title="target")
    for ax in axes.ravel()[len(sources) :]:
        ax.set_visible(False)
    fig.suptitle("Dose-response: EM rate vs steering scale (bands: 95% Wilson intervals)")
    fig.tight_layout()
    return _save(fig, path)
