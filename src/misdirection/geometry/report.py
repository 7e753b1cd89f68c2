"""Writing suite results: plain JSON (arrays as lists, NaN as null) and a markdown summary."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def to_jsonable(obj):
    """Recursively turn numpy arrays/scalars into lists/floats and NaN/inf into None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.ndim == 0:
            return to_jsonable(obj.item())
        if obj.dtype.kind == "f":
            # Fast path for big float matrices: round-trip through tolist, then patch non-finite.
            arr = obj.astype(np.float64)
            if np.isfinite(arr).all():
                return arr.tolist()
            return [to_jsonable(v) for v in arr]
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_json(data: Mapping, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(to_jsonable(data), indent=1, allow_nan=False))
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


def markdown_summary(res: Mapping) -> str:
    """Human-readable summary of a suite result (the dict that :func:`run_suite` returns)."""
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
    if res.get("transfer"):
        tr = res["transfer"]
        lines += [
            "",
            "## Transfer effectiveness",
            "",
            "(target - baseline) / (source - baseline); rows = source direction.",
            "",
            "| source | " + " | ".join(tr["targets"]) + " |",
            "|---|" + "---|" * len(tr["targets"]),
        ]
        for s, row in zip(tr["sources"], tr["effectiveness"]):
            lines.append(f"| {s} | " + " | ".join(_fmt(v) for v in row) + " |")
    if res.get("figures"):
        lines += ["", "## Figures", ""]
        for name, rel in res["figures"].items():
            lines.append(f"![{name}]({rel})")
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"
