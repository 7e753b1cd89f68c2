"""Statistics whose value is fixed, or bounded, by how they are computed, not by the vectors.

Removing a set's own mean direction m = u/|u| (u the mean of its k unit vectors u_i) leaves
residuals r_i = u_i - (u_i.m) m that sum to zero: sum_i r_i = k u - k |u| m = 0. Hence:

- two members: the residuals are antiparallel, their cosine is -1 whatever the vectors;
- three members: the residuals close a triangle, so their cosines are minus the cosines of its
  interior angles, whose sum lies in (1, 3/2]: the mean residual cosine lies in [-1/2, -1/3);
- k members with equal residual norms: the mean residual cosine is exactly -1/(k-1).

A mean over pairs of 1 - |after| / |before| (the pre-print's relative reduction) is then capped:
since the |after| of a triplet sum to at least 1, it is at most 1 - 1 / (3 max |before|), which is
negative whenever every |before| < 1/3.

Centred PCA of n vectors in general position spans n - 1 dimensions, so with no structure each PC
holds about 1/(n - 1) of the variance (not 1/n); the random-vector null gives the exact
distribution of the largest share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def own_mean_residual_range(k: int) -> tuple[float, float] | None:
    """Range of the mean residual cosine after removing a k-member set's own mean:
    (-1, -1) for k = 2, [-1/2, -1/3) for k = 3 (upper end excluded), None for k > 3 (only
    bounded above by 0 in the norm-weighted sense; -1/(k-1) with equal residual norms)."""
    if k == 2:
        return (-1.0, -1.0)
    if k == 3:
        return (-0.5, -1.0 / 3.0)
    return None


def relative_reduction_ceiling(before: Iterable[float]) -> float:
    """Largest possible pre-print relative reduction (percent) of a triplet with these before
    cosines after removing its own mean: 100 * (1 - 1 / (3 max |before|))."""
    top = max(abs(float(b)) for b in before)
    return -math.inf if top == 0 else 100.0 * (1.0 - 1.0 / (3.0 * top))


def pc1_chance_level(n: int) -> float:
    """Share of variance each centred PC holds for n structureless vectors: about 1/(n - 1)."""
    return 1.0 / (n - 1) if n > 1 else math.nan


def two_member_note(cluster: str) -> str:
    return (
        f"cluster {cluster!r} has two members: removing its own mean leaves two antiparallel "
        "residuals, so the after-cosine is -1 by construction (reduction = cos + 1 in our "
        "definition, 1 - 1/|cos| <= 0 in the pre-print's); it says nothing about the vectors"
    )


def own_mean_note(what: str, k: int) -> str:
    if k == 3:
        bound = "into [-1/2, -1/3)"
    else:
        bound = f"to -1/(k-1) = {-1.0 / (k - 1):.3f} when the residual norms are equal"
    return (
        f"{what}: removing a set's own mean makes its residuals sum to zero, which forces the mean "
        f"residual cosine of its {k} members {bound}; compare with the random-vector baseline, "
        "not with 0"
    )


def pc1_note(n: int, observed: float | None, null_mean: float | None) -> str:
    text = (
        f"PC1 chance level: centred PCA of {n} vectors spans {n - 1} dimensions, so with no "
        f"structure each PC holds about 1/(n-1) = {100 * pc1_chance_level(n):.1f}% of the "
        f"variance (not 1/n = {100 / n:.1f}%)"
    )
    if null_mean is not None and math.isfinite(null_mean):
        text += f"; the largest share among random vectors averages {100 * null_mean:.1f}%"
    if observed is not None and math.isfinite(observed):
        text += f" (observed {100 * observed:.1f}%)"
    return text
