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
    labels: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Heatmap with a colour bar fixed to [vmin, vmax] and the range written in its label.
    ``labels``: text per cell (overrides ``fmt``), e.g. a value with its interval."""
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
                if labels is not None or np.isfinite(M[y, x]):
                    dark = abs(M[y, x] - (vmin + vmax) / 2) > 0.6 * (vmax - vmin) / 2
                    ax.text(
                        x,
                        y,
                        labels[y][x] if labels is not None else fmt.format(M[y, x]),
                        ha="center",
                        va="center",
                        fontsize=8 if labels is None else 6.5,
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
                finite = s[np.isfinite(s)]
                ax.hist(
                    finite,
                    # A null that is constant (e.g. PC1's share with 2 vectors is always 1) or
                    # spans less than float resolution cannot be cut into 30 bins.
                    bins=30 if np.ptp(finite) > 1e-9 * max(1.0, float(np.abs(finite).max())) else 1,
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


def _group_palette(groups: Sequence[str]):
    plt = _plt()
    order = list(dict.fromkeys(groups))
    cmap = plt.get_cmap("tab10" if len(order) <= 10 else "tab20")
    return {g: cmap(i % cmap.N) for i, g in enumerate(order)}


def base_similarity_plot(result: Mapping, path: str | Path) -> Path:
    """Each vector's cosine to the base model's direction at its layer, bars coloured by group,
    with each group's mean as a horizontal line over its bars (the pre-print's Figure 3)."""
    plt = _plt()
    per = result["vectors"]
    groups = result["groups"]
    order = [n for g in groups for n in groups[g]["members"]]
    colour = _group_palette([per[n]["group"] for n in order])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(order) + 2.5), 4.4))
    x = np.arange(len(order))
    vals = [per[n]["cosine"] for n in order]
    ax.bar(x, vals, color=[colour[per[n]["group"]] for n in order], edgecolor="black", lw=0.4)
    for g, info in groups.items():
        idx = [order.index(m) for m in info["members"]]
        ax.hlines(
            info["mean"],
            min(idx) - 0.45,
            max(idx) + 0.45,
            color=colour[g],
            lw=2.5,
            linestyles="--",
            label=f"{g}: mean {info['mean']:.3f} (n = {info['n']})",
        )
    labels = [
        f"{n}\n(layer {per[n]['layer']})" if per[n]["layer"] is not None else n for n in order
    ]
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_ylim(min(-0.05, min(vals) - 0.05), 1.02)
    ax.set_ylabel("cosine to the base model's direction")
    ax.set_xlabel("fine-tuned model's direction")
    ax.set_title("Similarity of each direction to the base model's direction at its layer")
    ax.legend(fontsize=8, title="group (dashed: group mean)")
    return _save(fig, path)


def base_traces_plot(result: Mapping, path: str | Path) -> Path:
    """Layer-wise cosine of each vector's file to the base model's, one line per vector coloured
    by group; the layer the suite used is marked."""
    plt = _plt()
    traces = result["traces"]
    colour = _group_palette([t["group"] for t in traces.values()])
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    seen: dict[str, int] = {}
    for name, t in traces.items():
        k = seen.get(t["group"], 0)
        seen[t["group"]] = k + 1
        ax.plot(
            t["layers"],
            t["cosine"],
            color=colour[t["group"]],
            ls=styles[k % len(styles)],
            lw=1.6,
            label=f"{name} ({t['group']})",
        )
        if t.get("layer") is not None:
            ax.scatter(
                [t["layer"]],
                [t["cosine"][t["layer"]]],
                color=colour[t["group"]],
                s=40,
                edgecolor="black",
                zorder=5,
            )
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.set_ylabel("cosine to the base model's direction")
    ax.set_title("Layer-wise similarity to the base model (dot: the layer compared)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)
