"""Are two clusters of directions independent mechanisms or one shared direction?

All tests work on the cosine matrix ``C`` of the unit vectors and two disjoint index lists ``A`` and
``B``. PCA here is centred (as in :func:`misdirection.geometry.subspace.pca`); a PC axis ``p`` of a
set S is ``Uc_S^T v / sqrt(lam)``, so ``u_i . p = (C[i, S] @ v) / sqrt(lam)`` for any vector i.
Statistics that need two vectors in a cluster are NaN for a cluster of one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np

from misdirection.geometry.residual import remove_direction, residual_analysis
from misdirection.geometry.similarity import block, upper
from misdirection.geometry.subspace import centre

NAN = float("nan")


class Cohesion(TypedDict):
    """:func:`cluster_cohesion`'s result; every value is a scalar or a [B] array for a stack."""

    within: dict[str, np.ndarray]
    between: dict[str, np.ndarray]
    mean_within: np.ndarray
    mean_between: np.ndarray
    gap: np.ndarray


class ResidualMeans(TypedDict):
    """Mean within-cluster cosine before and after a removal, and the reduction (before - after)."""

    mean_before: np.ndarray
    mean_after: np.ndarray
    mean_reduction: np.ndarray


class PC1Shares(TypedDict):
    """Share of one cluster's variance on its own PC1, and of the other cluster's on that axis."""

    own_variance_ratio: np.ndarray
    other_variance_ratio: np.ndarray


class Independence(TypedDict):
    """:func:`independence`'s result (keys as in its docstring)."""

    angle_between_means_deg: np.ndarray
    cosine_between_means: np.ndarray
    span_fraction_a_in_b: np.ndarray
    span_fraction_b_in_a: np.ndarray
    mean_span_fraction_a_in_b: np.ndarray
    mean_span_fraction_b_in_a: np.ndarray
    residual_a_minus_mean_b: ResidualMeans
    residual_b_minus_mean_a: ResidualMeans
    #: ``pc1_variance_ratio`` and ``within_a`` / ``within_b`` / ``between`` ``_before``,
    #: ``_after``, ``_change``.
    pc1_ablation: dict[str, np.ndarray]
    pc1_a_in_b: PC1Shares
    pc1_b_in_a: PC1Shares


def nanmean_last(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where nothing is left (no warning)."""
    ok = ~np.isnan(x)
    cnt = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(ok, x, 0.0).sum(-1) / np.maximum(cnt, 1), np.nan)


def mean_within(C: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """Mean cosine over the pairs inside ``idx`` (NaN for fewer than 2 members)."""
    return nanmean_last(upper(block(C, idx)))


def mean_between(C: np.ndarray, a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """Mean cosine over the pairs (i in a, j in b)."""
    M = block(C, a, b)
    return nanmean_last(M.reshape(M.shape[:-2] + (-1,)))


def cluster_cohesion(C: np.ndarray, clusters: Mapping[str, Sequence[int]]) -> Cohesion:
    """Mean within-cluster cosine per cluster, mean between-cluster cosine per pair, and overall
    ``mean_within`` (over all within-cluster pairs), ``mean_between`` and ``gap`` = within - between."""
    names = list(clusters)
    pairs = [(a, b) for x, a in enumerate(names) for b in names[x + 1 :]]
    within = {c: mean_within(C, clusters[c]) for c in names}
    between = {f"{a}|{b}": mean_between(C, clusters[a], clusters[b]) for a, b in pairs}
    w_vals = np.concatenate([upper(block(C, m)) for m in clusters.values()], -1)
    b_vals = [block(C, clusters[a], clusters[b]).reshape(C.shape[:-2] + (-1,)) for a, b in pairs]
    w = nanmean_last(w_vals)
    bt = nanmean_last(np.concatenate(b_vals, -1)) if b_vals else np.full(C.shape[:-2], np.nan)
    return {
        "within": within,
        "between": between,
        "mean_within": w,
        "mean_between": bt,
        "gap": w - bt,
    }


def span_fraction(C: np.ndarray, members: Sequence[int], span_of: Sequence[int]) -> np.ndarray:
    """Norm of the projection of each unit vector in ``members`` onto span(``span_of``), in [0, 1]."""
    G = block(C, span_of)
    c = block(C, span_of, members)  # [..., |s|, |m|]
    Gi = np.linalg.pinv(G, rcond=1e-10, hermitian=True)
    energy = np.einsum("...im,...ij,...jm->...m", c, Gi, c)
    return np.sqrt(np.clip(energy, 0.0, 1.0))


def pc1_axis(C: np.ndarray, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of every vector with the first (centred) PC axis of the set ``idx``, and the share
    of that set's variance it explains. NaN when the set has fewer than 2 members or no variance."""
    s = list(idx)
    if len(s) < 2:
        return np.full(C.shape[:-1], NAN), np.full(C.shape[:-2], NAN)
    lam, V = np.linalg.eigh(centre(block(C, s)))
    total = np.clip(lam, 0.0, None).sum(-1)
    top = lam[..., -1]
    ok = total > 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        coords = (C[..., :, s] @ V[..., :, -1:])[..., 0] / np.sqrt(np.where(ok, top, 1.0))[
            ..., None
        ]
        ratio = np.where(ok, top / np.where(ok, total, 1.0), np.nan)
    coords = np.where(ok[..., None], coords, np.nan)
    return coords, ratio


def centred_variance_along(coords: np.ndarray, C: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """Share of the centred variance of set ``idx`` along a unit axis given by its ``coords``."""
    s = list(idx)
    if len(s) < 2:
        return np.full(C.shape[:-2], NAN)
    x = coords[..., s]
    x = x - x.mean(-1, keepdims=True)
    total = np.trace(centre(block(C, s)), axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 1e-12, (x**2).sum(-1) / np.where(total > 1e-12, total, 1.0), np.nan)


def _residual_means(C: np.ndarray, group: list[int], targets: list[int]) -> ResidualMeans:
    """Within-``targets`` cosines before/after removing ``group``'s mean (NaN for one target)."""
    if len(targets) >= 2:
        r = residual_analysis(C, group, targets)
        return {
            "mean_before": r["mean_before"],
            "mean_after": r["mean_after"],
            "mean_reduction": r["mean_reduction"],
        }
    nan = np.full(C.shape[:-2], NAN)
    return {"mean_before": nan, "mean_after": nan, "mean_reduction": nan}


def _pc1_shares(Cab: np.ndarray, own: list[int], other: list[int]) -> PC1Shares:
    coords, ratio = pc1_axis(Cab, own)
    return {
        "own_variance_ratio": ratio,
        "other_variance_ratio": centred_variance_along(coords, Cab, other),
    }


def independence(C: np.ndarray, a: Sequence[int], b: Sequence[int]) -> Independence:
    """Every independence test between clusters ``a`` and ``b`` (disjoint index lists).

    - ``angle_between_means_deg``: angle between the clusters' mean unit vectors.
    - ``span_fraction_a_in_b`` / ``_b_in_a``: per-vector norm fraction inside the other's span.
    - ``residual_a_minus_mean_b`` / ``residual_b_minus_mean_a``: within-cluster cosines before and
      after removing the other cluster's mean direction (cross-cluster residual test).
    - ``pc1_ablation``: remove the PC1 of a u b from all vectors; within-a, within-b and between
      mean cosines before/after and their change (after - before).
    - ``pc1_a_in_b``: share of a's variance on a's own PC1, and of b's variance on a's PC1 (and the
      converse ``pc1_b_in_a``).
    Works on one cosine matrix or a stack.
    """
    a, b = list(a), list(b)
    ma, mb = block(C, a).mean((-1, -2)), block(C, b).mean((-1, -2))
    cos_means = np.clip(block(C, a, b).mean((-1, -2)) / np.sqrt(np.maximum(ma * mb, 1e-300)), -1, 1)
    fa, fb = span_fraction(C, a, b), span_fraction(C, b, a)

    # PC1 ablation only needs the a u b block, indexed locally.
    ab = a + b
    Cab = block(C, ab)
    la, lb = list(range(len(a))), list(range(len(a), len(ab)))
    coords, ratio = pc1_axis(Cab, range(len(ab)))
    after = remove_direction(Cab, coords)
    abl: dict[str, np.ndarray] = {"pc1_variance_ratio": ratio}
    for label, fn in (
        ("within_a", lambda M: mean_within(M, la)),
        ("within_b", lambda M: mean_within(M, lb)),
        ("between", lambda M: mean_between(M, la, lb)),
    ):
        before_v, after_v = fn(Cab), fn(after)
        abl[f"{label}_before"], abl[f"{label}_after"] = before_v, after_v
        abl[f"{label}_change"] = after_v - before_v

    return {
        "angle_between_means_deg": np.degrees(np.arccos(cos_means)),
        "cosine_between_means": cos_means,
        "span_fraction_a_in_b": fa,
        "span_fraction_b_in_a": fb,
        "mean_span_fraction_a_in_b": fa.mean(-1),
        "mean_span_fraction_b_in_a": fb.mean(-1),
        "residual_a_minus_mean_b": _residual_means(C, b, a),
        "residual_b_minus_mean_a": _residual_means(C, a, b),
        "pc1_ablation": abl,
        "pc1_a_in_b": _pc1_shares(Cab, la, lb),
        "pc1_b_in_a": _pc1_shares(Cab, lb, la),
    }
