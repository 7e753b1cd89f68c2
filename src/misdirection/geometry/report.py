"""Writing suite results: plain JSON (arrays as lists, NaN as null) and a markdown summary."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from misdirection.io import atomic_write_text, to_jsonable


def write_json(data: Mapping, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(to_jsonable(data), indent=1, allow_nan=False))
    return path


def _cell(text: str) -> str:
    """Escape a markdown table cell (pair names contain '|')."""
    return str(text).replace("|", "\\|")


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def markdown_summary(res: Mapping, body_only: bool = False) -> str:
    """Human-readable summary of a suite result (the dict that :func:`run_suite` returns).

    ``body_only``: without the title and the figure links, for a page that titles the section and
    places the figures itself (the study report).
    """
    lines = [
        "# Geometry of misalignment directions",
        "",
        f"{res['n_vectors']} vectors of width {res['width']}"
        + (
            f", layer {res['settings']['layer']}"
            if res["settings"].get("layer") is not None
            else ""
        )
        + f". Null baselines: {res['settings']['n_null']} random-vector draws"
        + (f", {res['settings']['n_perm']} label permutations" if res.get("clusters") else "")
        + ".",
        "",
        "## Headline statistics against chance",
        "",
        (
            "Percentile = where the observed value falls among the null draws (50 = typical of chance; "
            "near 0 or 100 = unlikely by chance). Random = random directions of the same width and count; "
            "permuted = cluster labels shuffled."
        ),
        "",
        "| statistic | observed | random null mean [95%] | random pct | permuted pct |",
        "|---|---|---|---|---|",
    ]
    for key, s in res["statistics"].items():
        r, p = s.get("random") or {}, s.get("permuted") or {}
        band = (
            f"{_fmt(r.get('mean'))} [{_fmt(r.get('p2_5'))}, {_fmt(r.get('p97_5'))}]" if r else "n/a"
        )
        lines.append(
            f"| {_cell(key)} | {_fmt(s['observed'])} | {band} | {_fmt(r.get('percentile'), 3)} | "
            f"{_fmt(p.get('percentile'), 3) if p else '-'} |"
        )
    sim = res["similarity"]["summary"]
    lines += [
        "",
        "## Similarity",
        "",
        (
            f"Mean off-diagonal cosine {_fmt(sim['mean_cosine'])} (min {_fmt(sim['min_cosine'])}, "
            f"max {_fmt(sim['max_cosine'])}); mean angle {_fmt(sim['mean_angle_deg'])} degrees."
        ),
        "",
        "Most similar pairs:",
        "",
        "| a | b | cosine | angle (deg) |",
        "|---|---|---|---|",
    ]
    for p in res["similarity"]["top_pairs"]:
        lines.append(f"| {p['a']} | {p['b']} | {_fmt(p['cosine'])} | {_fmt(p['angle_deg'])} |")
    sub = res["subspace"]
    ev = res["pca"].get("explained_variance_ratio") or []
    lines += [
        "",
        "## Subspace",
        "",
        (
            f"Effective rank (participation ratio) {_fmt(sub['effective_rank'])} of {res['n_vectors']}; "
            f"first singular direction holds {_fmt(sub['energy_fraction'][0])} of the energy. "
            f"PCA: PC1 explains {_fmt(ev[0] if ev else None)}, PC2 {_fmt(ev[1] if len(ev) > 1 else None)} "
            "of the variance."
        ),
    ]
    if res.get("triangles"):
        t = res["triangles"]["summary"]
        lines += [
            "",
            "## Triangle consistency",
            "",
            (
                f"{t['n_triplets']} triplets; mean error {_fmt(t['mean_error_deg'])} deg, median "
                f"{_fmt(t['median_error_deg'])}, max {_fmt(t['max_error_deg'])}; "
                f"{_fmt(100 * t['share_below_5deg'])}% are within 5 deg of coplanar."
            ),
        ]
    if res.get("reference_projection"):
        rp = res["reference_projection"]
        lines += [
            "",
            f"## Projection onto span({', '.join(rp['reference'])})",
            "",
            "| vector | fraction in span | angle to span (deg) |",
            "|---|---|---|",
        ]
        for n, f, a in zip(res["names"], rp["fraction"], rp["angle_to_span_deg"]):
            lines.append(f"| {n} | {_fmt(f)} | {_fmt(a)} |")
    if res.get("independence"):
        lines += [
            "",
            "## Independence between clusters",
            "",
            (
                "| pair | angle between means (deg) | span frac a in b | span frac b in a | "
                "residual reduction a / b | PC1 ablation change within a / b |"
            ),
            "|---|---|---|---|---|---|",
        ]
        for pair, r in res["independence"].items():
            abl = r["pc1_ablation"]
            lines.append(
                f"| {_cell(pair)} | {_fmt(r['angle_between_means_deg'])} | {_fmt(r['mean_span_fraction_a_in_b'])} | "
                f"{_fmt(r['mean_span_fraction_b_in_a'])} | "
                f"{_fmt(r['residual_a_minus_mean_b']['mean_reduction'])} / "
                f"{_fmt(r['residual_b_minus_mean_a']['mean_reduction'])} | "
                f"{_fmt(abl['within_a_change'])} / {_fmt(abl['within_b_change'])} |"
            )
    if res.get("preprint") is not None:
        lines += preprint_markdown(res)
    if res.get("base_similarity"):
        bs = res["base_similarity"]
        lines += [
            "",
            "## Similarity to the base model's direction (pre-print Figure 3)",
            "",
            "| group | mean cosine | min | max | n |",
            "|---|---|---|---|---|",
        ]
        for g, info in bs["groups"].items():
            lines.append(
                f"| {_cell(g)} | {_fmt(info['mean'])} | {_fmt(info['min'])} | "
                f"{_fmt(info['max'])} | {info['n']} |"
            )
        lines += ["", "| vector | group | layer | cosine |", "|---|---|---|---|"]
        for name, p in bs["vectors"].items():
            lines.append(
                f"| {name} | {_cell(p['group'])} | {_fmt(p['layer'])} | {_fmt(p['cosine'])} |"
            )
    if res.get("transfer"):
        tr = res["transfer"]
        lo, hi = tr.get("effectiveness_low"), tr.get("effectiveness_high")
        lines += [
            "",
            "## Transfer effectiveness",
            "",
            (
                "(target - baseline) / (source - baseline); rows = source direction; "
                f"[{tr.get('interval', 'interval')}]."
            ),
            "",
            "| source | " + " | ".join(tr["targets"]) + " |",
            "|---|" + "---|" * len(tr["targets"]),
        ]
        for x, (s, row) in enumerate(zip(tr["sources"], tr["effectiveness"])):
            cells = []
            for y, v in enumerate(row):
                band = ""
                if lo is not None and lo[x][y] is not None and hi[x][y] is not None:
                    band = f" [{_fmt(lo[x][y])}, {_fmt(hi[x][y])}]"
                cells.append(_fmt(v) + band)
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if res.get("figures") and not body_only:
        lines += ["", "## Figures", ""]
        for name, rel in res["figures"].items():
            lines.append(f"![{name}]({rel})")
    if res.get("forced_by_construction"):
        lines += ["", "## Forced by construction", ""]
        lines += [f"- {n}" for n in res["forced_by_construction"]]
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    if body_only:
        lines = lines[2:]
    return "\n".join(lines) + "\n"


def _pct(x) -> str:
    return "n/a" if x is None else f"{float(x):.1f}%"


def preprint_markdown(res: Mapping) -> list[str]:
    """The pre-print's definitions beside ours, each value labelled with its definition."""
    pp = res["preprint"]
    show = res["settings"].get("definitions", "both")
    ours, theirs = show in ("both", "ours"), show in ("both", "preprint")
    head = ["set"] + (["misdirection: mean(before) - mean(after)"] if ours else [])
    head += ["pre-print: mean of 1 - |after|/|before|"] if theirs else []
    lines = [
        "",
        "## The pre-print's definitions beside ours",
        "",
        "### Removing a set's own mean direction",
        "",
        "| " + " | ".join(_cell(h) for h in head) + " |",
        "|" + "---|" * len(head),
    ]

    def row(label: str, diff, rel) -> str:
        cells = [_cell(label)] + ([_fmt(diff)] if ours else []) + ([_pct(rel)] if theirs else [])
        return "| " + " | ".join(cells) + " |"

    for k, v in pp["own_mean_residual"].items():
        lines.append(row(k, v["difference"], v["relative_reduction_pct"]))
    if pp["cross_residual"]:
        lines += ["", "### Removing the other cluster's mean (our cross-cluster residual test)", ""]
        lines += ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
        for k, v in pp["cross_residual"].items():
            lines.append(row(k, v["difference"], v["relative_reduction_pct"]))
    for t in pp["triplets"]:
        name = "-".join(t["vectors"])
        lines += [
            "",
            f"### Test 3 (pre-print): triplet {name}, its own mean removed",
            "",
            "| pair | before | after |",
            "|---|---|---|",
        ]
        for pair, b in t["before"].items():
            lines.append(f"| {pair} | {_fmt(b)} | {_fmt(t['after'][pair])} |")
        null = t.get("null") or {}
        nr = null.get("relative_reduction_pct") or {}
        na = null.get("mean_after") or {}
        lines += [
            "",
            f"Mean after-cosine {_fmt(t['mean_after'])} (forced into [-1/2, -1/3) by construction"
            + (f"; random triplets: median {_fmt(na.get('p50'))}" if na else "")
            + f"). Reduction: misdirection {_fmt(t['difference'])}, pre-print "
            f"{_pct(t['relative_reduction_pct'])} (at most {_pct(t['relative_ceiling_pct'])} for "
            "these before-cosines, whatever the vectors"
            + (f"; random triplets: median {_pct(nr.get('p50'))}" if nr else "")
            + ").",
        ]
    g = pp["global_pc1"]
    lines += [
        "",
        "### Test 4 (pre-print): the PC1 of all vectors removed",
        "",
        f"PC1 holds {_pct(100 * g['pc1_variance_ratio'])} of the variance of all vectors.",
        "",
    ]
    if g["within"] or g["between"]:
        lines += ["| cluster | before | after | change |", "|---|---|---|---|"]
    else:
        lines.append("No clusters were given, so there is no within-cluster change to report.")
    for c, v in g["within"].items():
        lines.append(
            f"| {_cell(c)} | {_fmt(v['before'])} | {_fmt(v['after'])} | {_fmt(v['change'])} |"
        )
    for c, v in g["between"].items():
        lines.append(
            f"| between {_cell(c)} | {_fmt(v['before'])} | {_fmt(v['after'])} | {_fmt(v['change'])} |"
        )
    if pp["span_variance_pct"]:
        lines += [
            "",
            "### Test 2: share inside the other cluster's span",
            "",
            (
                "| pair | misdirection: mean norm fraction a in b / b in a | "
                "pre-print: mean % of variance a in b / b in a |"
            ),
            "|---|---|---|",
        ]
        for pair, v in pp["span_variance_pct"].items():
            ind = (res.get("independence") or {}).get(pair, {})
            lines.append(
                f"| {_cell(pair)} | {_fmt(ind.get('mean_span_fraction_a_in_b'))} / "
                f"{_fmt(ind.get('mean_span_fraction_b_in_a'))} | {_pct(v['mean_a_in_b'])} / "
                f"{_pct(v['mean_b_in_a'])} |"
            )
    mh = pp["merge_heights"]
    lines += [
        "",
        "### Merge heights (average linkage)",
        "",
        "misdirection, angles (deg): " + ", ".join(_fmt(h) for h in mh["deg"]),
        "",
        "pre-print, 1 - cos: " + ", ".join(f"{h:.3f}" for h in mh["one_minus_cos"]),
    ]
    if pp["triplet_reconstruction"]:
        lines += ["", "### SVD reconstruction correlation (rank 1, 2, ...)", ""]
        lines.append("whole set: " + ", ".join(_fmt(r) for r in pp["whole_set_reconstruction"]))
        for t in pp["triplet_reconstruction"]:
            lines.append("")
            lines.append(
                "-".join(t["vectors"]) + ": " + ", ".join(_fmt(r) for r in t["rank_k_correlation"])
            )
    return lines
