"""Intervals for shares: hand values, symmetry, edge cases and coverage by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from misdirection.intervals import Reduction, difference, reduction, wilson

Z = 1.959963984540054  # the 97.5% normal quantile


def test_wilson_zero_of_44_has_an_upper_end():
    low, high = wilson(0, 44)
    # At count 0 the Wilson upper limit is z^2 / (n + z^2) = 3.8415 / 47.8415.
    assert low == 0.0
    assert high == pytest.approx(Z**2 / (44 + Z**2), abs=1e-12)
    assert high == pytest.approx(0.0803, abs=5e-5)


def test_wilson_hand_values_and_symmetry():
    # Newcombe (1998), single proportion example: 81/263 -> 0.2553 to 0.3662.
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    # 5/10: centred on 0.5; half-width z sqrt(2.5 + z^2/4) / (10 + z^2).
    low, high = wilson(5, 10)
    half = Z * math.sqrt(2.5 + Z**2 / 4) / (10 + Z**2)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    for count, n in [(0, 44), (3, 44), (17, 40), (1, 7)]:
        lo, hi = wilson(count, n)
        lo_m, hi_m = wilson(n - count, n)
        assert (lo, hi) == pytest.approx((1 - hi_m, 1 - lo_m), abs=1e-12)
    assert wilson(44, 44)[1] == 1.0
    assert wilson(3, 44, confidence=0.99)[1] > wilson(3, 44)[1]  # wider at higher confidence


def test_wilson_edges_and_errors():
    assert all(math.isnan(v) for v in wilson(0, 0))
    with pytest.raises(ValueError, match="count 5 of n 4"):
        wilson(5, 4)
    with pytest.raises(ValueError, match="confidence"):
        wilson(1, 4, confidence=1.0)


@pytest.mark.parametrize(("p", "n"), [(0.02, 44), (0.1, 44), (0.5, 20)])
def test_wilson_coverage_by_simulation(p, n):
    rng = np.random.default_rng(0)
    draws = rng.binomial(n, p, size=2000)
    covered = [lo <= p <= hi for lo, hi in (wilson(int(k), n) for k in draws)]
    assert np.mean(covered) >= 0.93


def test_newcombe_difference_hand_value():
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80 = 0.2000, method 10: 0.0524 to 0.3339.
    d, low, high = difference(48, 80, 56, 70)
    assert d == pytest.approx(0.2, abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    # By hand from the Wilson limits of each share.
    la, ua = wilson(48, 80)
    lb, ub = wilson(56, 70)
    assert low == pytest.approx(0.2 - math.hypot(0.8 - lb, ua - 0.6), abs=1e-12)
    assert high == pytest.approx(0.2 + math.hypot(ub - 0.8, 0.6 - la), abs=1e-12)


def test_difference_is_antisymmetric_and_finite_at_zero():
    d, low, high = difference(0, 44, 9, 44)
    d2, low2, high2 = difference(9, 44, 0, 44)
    assert (d, low, high) == pytest.approx((-d2, -high2, -low2), abs=1e-12)
    d, low, high = difference(0, 44, 0, 44)
    assert d == 0.0 and -0.09 < low < 0 < high < 0.09
    assert all(math.isnan(v) for v in difference(0, 0, 3, 10))


def test_reduction_to_zero_stays_finite():
    r = reduction(9, 44, 0, 44)
    assert r.estimable and r.reason == "" and r.value == 1.0 and r.high == 1.0
    # With nothing after, the ratio's upper limit is u_after / sqrt(l_before (2 p_before - l_before)).
    u_after = wilson(0, 44)[1]
    l_before = wilson(9, 44)[0]
    p_before = 9 / 44
    expected_low = 1 - u_after / math.sqrt(l_before * (2 * p_before - l_before))
    assert r.low == pytest.approx(expected_low, abs=1e-12)
    assert r.low == pytest.approx(0.5592, abs=1e-4)
    # A small baseline is honest: from 2 of 44 to 0 the reduction could be negative.
    small = reduction(2, 44, 0, 44)
    assert small.value == 1.0 and small.low is not None and small.low < 0


def test_reduction_not_estimable_without_a_baseline():
    r = reduction(0, 44, 3, 44)
    assert r == Reduction(None, None, None, False, "EM before is 0 of 44")
    assert reduction(3, 10, 0, 0).reason == "no answers after"


def test_reduction_known_case():
    # 20/100 -> 10/100: ratio 0.5. MOVER-R on Wilson limits, solved by hand from its quadratic.
    r = reduction(20, 100, 10, 100)
    assert r.value == pytest.approx(0.5)
    l1, u1 = wilson(10, 100)
    l2, u2 = wilson(20, 100)
    b = 0.1 * 0.2
    a_low, c_low = u2 * (0.4 - u2), l1 * (0.2 - l1)
    a_high, c_high = l2 * (0.4 - l2), u1 * (0.2 - u1)
    ratio_low = (b - math.sqrt(b * b - a_low * c_low)) / a_low
    ratio_high = (b + math.sqrt(b * b - a_high * c_high)) / a_high
    assert (r.low, r.high) == pytest.approx((1 - ratio_high, 1 - ratio_low), abs=1e-12)
    assert (round(r.low, 3), round(r.high, 3)) == (0.001, 0.750)
    # An increase is a negative reduction.
    up = reduction(10, 100, 20, 100)
    assert up.value == pytest.approx(-1.0) and up.low < -1 < up.high < 0


def test_reduction_coverage_by_simulation():
    rng = np.random.default_rng(1)
    before = rng.binomial(44, 0.25, size=2000)
    after = rng.binomial(44, 0.1, size=2000)
    hits = []
    for kb, ka in zip(before, after, strict=True):
        r = reduction(int(kb), 44, int(ka), 44)
        if r.estimable:
            hits.append(r.low <= 0.6 <= r.high)
    assert np.mean(hits) >= 0.93
