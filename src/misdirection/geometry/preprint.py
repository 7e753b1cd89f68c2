"""The six-vector pre-print's definitions, computed beside ours so its numbers can be reproduced.

"Geometric structure of emergent misalignment" (LessWrong pre-print, October 2025) defines some
statistics differently from this package. Each function here implements one of its definitions
from the cosine matrix ``C``; :func:`preprint_analyses` runs them all and labels every value.

- **Relative residual reduction**: the mean over pairs of ``1 - |after| / |before|``, in percent
  (ours: ``mean(before) - mean(after)`` in cosine units).
- **Test 2** as the share of a vector's variance (squared norm) inside the other cluster's span,
  in percent (ours: the norm of the projection).
- **Test 3**: remove a named triplet's *own* mean from its members (ours: remove the other
  cluster's mean from within-cluster pairs). Forced by construction (see :mod:`.forced`); the
  random-triplet baseline shows the value that construction alone gives.
- **Test 4**: remove the PC1 of *all* vectors and report the change within every cluster (ours:
  the PC1 of the two clusters of a pair).
- **Merge heights** in ``1 - cos`` (average linkage on that distance) beside degrees.
- **SVD reconstruction correlation** per triplet as well as for the whole set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from misdirection.geometry import forced
from misdirection.geometry.clustering import hierarchical
from misdirection.geometry.independence import mean_between, mean_within, pc1_axis, span_fraction
from misdirection.geometry.nulls import random_cosine_matrices, summarize
from misdirection.geometry.residual import remove_direction, residual_analysis
from misdirection.geometry.similarity import block, upper
from misdirection.geometry.subspace import spectrum

PREPRINT = "pre-print"
OURS = "misdirection"
DEFINITIONS = {
    "relative_reduction_pct": "mean over pairs of 1 - |after|/|before|, percent (pre-print)",
    "difference": "mean(before) - mean(after), cosine units (misdirection)",
    "span_variance_pct": "squared norm of the projection onto the other cluster's span, percent "
    "(pre-print Test 2)",
    "span_fraction": "norm of the projection onto the other cluster's span (misdirection)",
    "own_mean_triplet": "remove the triplet's own mean from its three members (pre-print Test 3)",
    "global_pc1": "remove the centred PC1 of all vectors, change of the mean cosine within every "
    "cluster (pre-print Test 4)",
    "merge_height_one_minus_cos": "average linkage on 1 - cos (pre-print)",
    "merge_height_deg": "average linkage on angles in degrees (misdirection)",
}


# The pre-print's six vectors and the cosines it reports (Section 3); the other 8 pairs (finance or
# sports with a medical or stylistic vector) are not reported.
PREPRINT_VECTORS = ("medical", "medical_rep", "finance", "sports", "profanity", "malicious")
PREPRINT_COSINES: dict[tuple[str, str], float] = {
    ("medical", "medical_rep"): 0.853,
    ("finance", "sports"): 0.746,
    ("profanity", "malicious"): 0.412,
    ("profanity", "medical"): -0.235,
    ("profanity", "medical_rep"): -0.209,
    ("malicious", "medical"): -0.081,
    ("malicious", "medical_rep"): -0.131,
}


def gram_matrix(
    names: Sequence[str], cosines: Mapping[tuple[str, str], float], unreported: float
) -> np.ndarray:
    """The cosine matrix of ``names`` with the given pair cosines and ``unreported`` elsewhere."""
    G = np.full((len(names), len(names)), float(unreported))
    np.fill_diagonal(G, 1.0)
    for (a, b), c in cosines.items():
        i, j = names.index(a), names.index(b)
        G[i, j] = G[j, i] = c
    return G


def vectors_from_gram(G: np.ndarray, width: int, seed: int = 0) -> np.ndarray:
    """Unit row vectors in R^width whose cosine matrix is ``G`` (positive definite).

    Cholesky rows, rotated by a random orthonormal frame so that no coordinate is special.
    """
    n = G.shape[0]
    if width < n:
        raise ValueError(f"{n} vectors need a width of at least {n}, got {width}")
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((width, n)))
    return np.linalg.cholesky(G) @ q.T


def relative_reduction(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Mean over pairs (last axis) of ``1 - |after| / |before|``, in percent.

    Pairs whose after-cosine is NaN (a vector along the removed direction) or whose before-cosine
    is 0 (the ratio is undefined) are skipped; NaN when no pair is left.
    """
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    ok = ~np.isnan(a) & (np.abs(b) > 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ok, 1.0 - np.abs(a) / np.where(ok, np.abs(b), 1.0), 0.0)
        cnt = ok.sum(-1)
        return np.where(cnt > 0, 100.0 * ratio.sum(-1) / np.maximum(cnt, 1), np.nan)


def _pairs(M: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    i, j = np.triu_indices(len(names), 1)
    return {f"{names[a]}~{names[b]}": float(M[a, b]) for a, b in zip(i.tolist(), j.tolist())}


def residual_both(
    C: np.ndarray, group: Sequence[int], targets: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """Residual analysis (as :func:`residual_analysis`) with both reductions: ``difference`` (ours)
    and ``relative_reduction_pct`` (the pre-print's). Works on stacks."""
    r = residual_analysis(C, group, targets)
    return {
        **r,
        "difference": r["mean_reduction"],
        "relative_reduction_pct": relative_reduction(upper(r["before"]), upper(r["after"])),
    }


def own_mean_triplet(
    C: np.ndarray,
    triplet: Sequence[int],
    names: Sequence[str],
    width: int,
    draws: int = 0,
    rng: np.random.Generator | None = None,
) -> dict[str, object]:
    """Test 3: remove the triplet's own mean from its members.

    Returns per-pair ``before`` / ``after`` cosines, ``mean_before``, ``mean_after``, both
    reductions, what construction forces (``forced_mean_after_range``, ``relative_ceiling_pct``)
    and, with ``draws`` > 0, the same statistics for random triplets of width ``width``.
    """
    t = list(triplet)
    if len(t) != 3 or len(set(t)) != 3:
        raise ValueError(f"a triplet needs three different vectors, got {t}")
    r = residual_both(C, t)
    labels = [names[x] for x in t]
    before = upper(r["before"])
    out: dict[str, object] = {
        "vectors": labels,
        "before": _pairs(r["before"], labels),
        "after": _pairs(r["after"], labels),
        "mean_before": float(r["mean_before"]),
        "mean_after": float(r["mean_after"]),
        "difference": float(r["difference"]),
        "relative_reduction_pct": float(r["relative_reduction_pct"]),
        "forced_mean_after_range": list(forced.own_mean_residual_range(3) or []),
        "relative_ceiling_pct": forced.relative_reduction_ceiling(before),
        "null": None,
    }
    if draws > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        Cs = random_cosine_matrices(3, width, draws, rng)
        nr = residual_both(Cs, [0, 1, 2])
        out["null"] = {
            "what": f"{draws} triplets of random directions in {width} dimensions, own mean removed",
            "mean_after": summarize(float(r["mean_after"]), nr["mean_after"]),
            "relative_reduction_pct": summarize(
                float(r["relative_reduction_pct"]), nr["relative_reduction_pct"]
            ),
        }
    return out


def global_pc1_removal(
    C: np.ndarray, clusters: Mapping[str, Sequence[int]], names: Sequence[str]
) -> dict[str, object]:
    """Test 4: remove the centred PC1 of all vectors from every vector; the mean cosine within
    every cluster (and between every pair of clusters) before, after, and the change."""
    n = C.shape[-1]
    coords, ratio = pc1_axis(C, range(n))
    after = remove_direction(C, coords)
    within = {}
    for c, m in clusters.items():
        if len(m) >= 2:
            wb, wa = float(mean_within(C, m)), float(mean_within(after, m))
            within[c] = {"before": wb, "after": wa, "change": wa - wb}
    cl = list(clusters)
    between = {}
    for x, a in enumerate(cl):
        for b in cl[x + 1 :]:
            bb = float(mean_between(C, clusters[a], clusters[b]))
            aa = float(mean_between(after, clusters[a], clusters[b]))
            between[f"{a}|{b}"] = {"before": bb, "after": aa, "change": aa - bb}
    return {
        "pc1_variance_ratio": float(ratio),
        "loadings": dict(zip(names, np.asarray(coords, dtype=float).tolist())),
        "within": within,
        "between": between,
        "after": after,
    }


def span_variance(C: np.ndarray, members: Sequence[int], span_of: Sequence[int]) -> np.ndarray:
    """Test 2 the pre-print's way: percent of each member's variance inside span(``span_of``)."""
    return 100.0 * span_fraction(C, members, span_of) ** 2


def preprint_analyses(
    C: np.ndarray,
    names: Sequence[str],
    clusters: Mapping[str, Sequence[int]],
    triplets: Sequence[Sequence[int]],
    width: int,
    draws: int = 0,
    seed: int = 0,
) -> dict[str, object]:
    """Every pre-print statistic, each labelled with its definition (see :data:`DEFINITIONS`)."""
    rng = np.random.default_rng(seed + 7919)  # its own stream: the suite's nulls stay unchanged
    n = C.shape[-1]
    out: dict[str, object] = {"definitions": DEFINITIONS}
    residual = {"all": residual_both(C, range(n))}
    for c, m in clusters.items():
        if len(m) >= 2:
            residual[c] = residual_both(C, m)
    out["own_mean_residual"] = {
        k: {
            "members": [names[i] for i in (range(n) if k == "all" else clusters[k])],
            "mean_before": float(v["mean_before"]),
            "mean_after": float(v["mean_after"]),
            "difference": float(v["difference"]),
            "relative_reduction_pct": float(v["relative_reduction_pct"]),
        }
        for k, v in residual.items()
    }
    cross = {}
    cl = list(clusters)
    for x, a in enumerate(cl):
        for b in cl[x + 1 :]:
            for tgt, grp in ((a, b), (b, a)):
                if len(clusters[tgt]) >= 2:
                    r = residual_both(C, clusters[grp], clusters[tgt])
                    cross[f"{tgt} minus mean of {grp}"] = {
                        "difference": float(r["difference"]),
                        "relative_reduction_pct": float(r["relative_reduction_pct"]),
                    }
    out["cross_residual"] = cross
    out["triplets"] = [own_mean_triplet(C, t, names, width, draws, rng) for t in triplets]
    out["triplet_reconstruction"] = [
        {
            "vectors": [names[i] for i in t],
            "rank_k_correlation": spectrum(block(C, list(t)))["rank_k_correlation"].tolist(),
        }
        for t in triplets
    ]
    out["whole_set_reconstruction"] = spectrum(C)["rank_k_correlation"].tolist()
    g = global_pc1_removal(C, clusters, names)
    g.pop("after")
    out["global_pc1"] = g
    spans = {}
    for x, a in enumerate(cl):
        for b in cl[x + 1 :]:
            sa, sb = (
                span_variance(C, clusters[a], clusters[b]),
                span_variance(C, clusters[b], clusters[a]),
            )
            spans[f"{a}|{b}"] = {
                "a_in_b": dict(zip([names[i] for i in clusters[a]], sa.tolist())),
                "b_in_a": dict(zip([names[i] for i in clusters[b]], sb.tolist())),
                "mean_a_in_b": float(sa.mean()),
                "mean_b_in_a": float(sb.mean()),
            }
    out["span_variance_pct"] = spans
    h1 = hierarchical(C, distance="one_minus_cos")
    h2 = hierarchical(C)
    out["merge_heights"] = {
        "one_minus_cos": h1["merge_heights"].tolist(),
        "deg": h2["merge_heights_deg"].tolist(),
    }
    return out
