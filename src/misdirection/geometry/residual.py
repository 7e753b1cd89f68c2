"""Residual analysis: how much of the similarity between directions is a shared mean direction?

The mean direction m of a group is the normalised mean of its unit vectors. Removing it from every
unit vector u leaves r = u - (u.m) m; we compare the cosines before and after. The "reduction" of
a pair is cos_before - cos_after; its average over pairs can be negative (removing a shared
component can make the rests point further together or apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from misdirection.errors import DataError, ShapeError
from misdirection.geometry.similarity import block, check_gram, upper


def remove_direction(C: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Cosines after removing a unit direction with coordinates ``a_i = u_i . m`` from each vector.

    ``C`` may be any principal block of the cosine matrix (with ``a`` restricted alike) or a
    stack of them. Vectors lying along the removed direction have no residual: their rows and
    columns are NaN.
    """
    R = C - a[..., :, None] * a[..., None, :]
    n = R.shape[-1]
    idx = np.arange(n)
    d = np.clip(R[..., idx, idx], 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(d > 1e-12, 1.0 / np.sqrt(np.where(d > 1e-12, d, 1.0)), np.nan)
    out = R * s[..., :, None] * s[..., None, :]
    out[..., idx, idx] = np.where(np.isnan(s), np.nan, 1.0)
    return np.clip(out, -1.0, 1.0)


def mean_direction_coords(C: np.ndarray, group: Sequence[int]) -> np.ndarray:
    """Cosine of every vector with the group's mean direction (DataError if that mean is zero)."""
    g = list(group)
    proj = C[..., :, g].mean(-1)  # u_i . mean
    norm2 = block(C, g).mean((-1, -2))  # |mean|^2
    if np.any(norm2 < 1e-12):
        raise DataError("the mean direction of the group is zero (its vectors cancel out)")
    return proj / np.sqrt(norm2)[..., None]


def nan_pair_means(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means over pairs (last axis) of ``before`` and ``after``, skipping pairs where ``after`` is
    NaN; NaN when no pair is left."""
    ok = ~np.isnan(after)
    cnt = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mb = np.where(ok, before, 0.0).sum(-1) / cnt
        ma = np.where(ok, after, 0.0).sum(-1) / cnt
    return mb, ma


def residual_analysis(
    C: np.ndarray, group: Sequence[int], targets: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """Remove the mean direction of ``group`` from the ``targets`` (default: the group itself).

    Returns the targets' cosine matrices ``before`` and ``after``, each target's cosine with the
    mean direction (``alignment``), and ``mean_before``, ``mean_after``, ``mean_reduction``
    (= mean over target pairs of before - after; pairs involving a vector that lies along the mean
    direction have no residual cosine and are skipped). Needs at least 2 targets. Works on one
    cosine matrix or a stack.
    """
    C = check_gram(C, 1, "residual analysis")
    g = list(group)
    t = g if targets is None else list(targets)
    if len(g) == 0:
        raise ShapeError("residual analysis needs a non-empty group")
    if len(t) < 2:
        raise ShapeError(f"residual analysis needs at least 2 target vectors, got {len(t)}")
    a = mean_direction_coords(C, g)[..., t]
    before = block(C, t)
    after = remove_direction(before, a)
    mb, ma = nan_pair_means(upper(before), upper(after))
    return {
        "alignment": a,
        "before": before,
        "after": after,
        "mean_before": mb,
        "mean_after": ma,
        "mean_reduction": mb - ma,
    }
