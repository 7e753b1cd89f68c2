"""Confidence intervals for shares, differences of shares and relative reductions: one implementation.

Every share the package reports (EM, coherent, misaligned among coherent, ...) is a count of ``n``
answers, and its interval comes from here:

* :func:`wilson` — the Wilson score interval. Unlike the Wald interval or a percentile bootstrap, it
  does not collapse to a point at 0 or n (0 of 44 gives [0, 8.0%], not [0, 0]) and its coverage stays
  close to nominal for shares near 0 and 1, where EM shares usually are.
* :func:`difference` — the change ``p_b - p_a`` between two independent shares, with Newcombe's hybrid
  score interval (his method 10, 1998): the two Wilson intervals combined by the square-root rule.
  It inherits Wilson's behaviour at the edges and is never wider than [-1, 1].
* :func:`reduction` — the relative reduction ``1 - p_after / p_before`` with an interval from the
  ratio ``p_after / p_before`` by MOVER-R (Donner & Zou, 2012) applied to the two Wilson intervals.
  It stays finite when nothing is left after (``count_after == 0``), it is wide when the baseline
  is small (a reduction from 2 of 44 is barely known), and it is *not estimable* when the baseline
  is 0 (there is nothing to reduce): :class:`Reduction` says so instead of showing a number.

Why binomial intervals although answers are drawn per question. Studies sample a fixed number of
answers for each question (a stratified design). The variance of the overall share is then
``sum_q n_q p_q (1 - p_q) / N^2``, which is at most the binomial ``p (1 - p) / N`` (equality when all
questions share the same p). Intervals that assume one binomial are therefore slightly conservative
for the stratified design, never anti-conservative, and they need no resampling or seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["Reduction", "difference", "reduction", "wilson"]


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _check_counts(count: int, n: int, what: str) -> None:
    if n < 0 or count < 0 or count > n:
        raise ValueError(f"{what}: need 0 <= count <= n, got count {count} of n {n}")


def wilson(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the share ``count / n``; ``(nan, nan)`` when ``n == 0``.

    ``wilson(0, 44)`` is ``(0.0, 0.0803)``: the upper end is ``z^2 / (n + z^2)``, not 0.
    """
    _check_counts(count, n, "wilson")
    z = _z(confidence)
    if n == 0:
        return math.nan, math.nan
    z2 = z * z
    centre = (count + z2 / 2) / (n + z2)
    half = z * math.sqrt(count * (n - count) / n + z2 / 4) / (n + z2)
    # At 0 and n the closed form's limit is exactly 0 or 1; rounding must not leave -1e-17 there.
    low = 0.0 if count == 0 else max(0.0, centre - half)
    high = 1.0 if count == n else min(1.0, centre + half)
    return low, high


def difference(
    count_a: int, n_a: int, count_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(p_b - p_a, low, high)``: Newcombe's hybrid score interval (method 10); nan if an n is 0.

    With ``(l, u)`` the Wilson limits of each share: ``low = d - sqrt((p_b - l_b)^2 + (u_a - p_a)^2)``
    and ``high = d + sqrt((u_b - p_b)^2 + (p_a - l_a)^2)``. The shares are taken as independent
    (separately sampled answers, as for two conditions of one study).
    """
    _check_counts(count_a, n_a, "difference (a)")
    _check_counts(count_b, n_b, "difference (b)")
    if n_a == 0 or n_b == 0:
        _z(confidence)
        return math.nan, math.nan, math.nan
    p_a, p_b = count_a / n_a, count_b / n_b
    l_a, u_a = wilson(count_a, n_a, confidence)
    l_b, u_b = wilson(count_b, n_b, confidence)
    d = p_b - p_a
    low = d - math.sqrt((p_b - l_b) ** 2 + (u_a - p_a) ** 2)
    high = d + math.sqrt((u_b - p_b) ** 2 + (p_a - l_a) ** 2)
    return d, max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class Reduction:
    """Relative reduction ``1 - p_after / p_before`` with its interval, or why there is none.

    ``value``, ``low`` and ``high`` are fractions (0.5 = halved; negative = an increase) and ``None``
    when not ``estimable``; ``reason`` then says why (e.g. ``"EM before is 0 of 44"``).
    """

    value: float | None
    low: float | None
    high: float | None
    estimable: bool
    reason: str


def _solve_ratio_limit(a: float, b: float, c: float, sign: float) -> float:
    # Root of a t^2 - 2 b t + c = 0 picked by MOVER-R; a == 0 leaves the linear equation.
    if a == 0:
        return c / (2 * b) if b else 0.0
    disc = max(0.0, b * b - a * c)  # >= 0 in exact arithmetic; guard rounding
    return (b + sign * math.sqrt(disc)) / a


def _ratio_interval(
    p_num: float, l_num: float, u_num: float, p_den: float, l_den: float, u_den: float
) -> tuple[float, float]:
    """MOVER-R limits of ``p_num / p_den`` from each share's interval (Donner & Zou 2012).

    The lower limit L solves ``(p_num - L p_den)^2 = (p_num - l_num)^2 + L^2 (u_den - p_den)^2``,
    the upper limit U the same with ``u_num`` and ``l_den``: the MOVER interval of the difference
    ``p_num - t p_den`` set to contain 0.
    """
    b = p_num * p_den
    low = _solve_ratio_limit(u_den * (2 * p_den - u_den), b, l_num * (2 * p_num - l_num), -1.0)
    high = _solve_ratio_limit(l_den * (2 * p_den - l_den), b, u_num * (2 * p_num - u_num), 1.0)
    return max(0.0, low), high


def reduction(
    count_before: int,
    n_before: int,
    count_after: int,
    n_after: int,
    confidence: float = 0.95,
) -> Reduction:
    """Relative reduction ``1 - p_after / p_before`` with a MOVER-R interval on Wilson limits.

    Finite when ``count_after == 0`` (the ratio's upper limit is then ``u_after / sqrt(l_before
    (2 p_before - l_before))``); not estimable when ``count_before == 0`` or an ``n`` is 0.
    """
    _check_counts(count_before, n_before, "reduction (before)")
    _check_counts(count_after, n_after, "reduction (after)")
    _z(confidence)
    if n_before == 0 or n_after == 0:
        which = "before" if n_before == 0 else "after"
        return Reduction(None, None, None, False, f"no answers {which}")
    if count_before == 0:
        return Reduction(None, None, None, False, f"EM before is 0 of {n_before}")
    p_before, p_after = count_before / n_before, count_after / n_after
    l_b, u_b = wilson(count_before, n_before, confidence)
    l_a, u_a = wilson(count_after, n_after, confidence)
    ratio_low, ratio_high = _ratio_interval(p_after, l_a, u_a, p_before, l_b, u_b)
    return Reduction(
        value=1 - p_after / p_before,
        low=1 - ratio_high,
        high=1 - ratio_low,
        estimable=True,
        reason="",
    )
