"""Noise ceilings: split-half reliability against the analytic value, bootstrap cosines, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from misdirection.errors import DataError, ShapeError
from misdirection.reliability import (
    SAMPLES_FORMAT,
    DirectionSamples,
    bootstrap_cosine,
    ceiling,
    samples_path,
    split_half,
)

# A planted direction plus isotropic noise of sd S in D_MODEL dims, N_MIS vs N_AL answers. The noise
# of the mean-diff estimate has squared norm about S^2 d (1/n_m + 1/n_a) = NOISE, so the expected
# cosine between two independent full-size estimates (the reliability) is D^2 / (D^2 + NOISE).
D_MODEL, N_MIS, N_AL, S = 256, 30, 50, 1.0
NOISE = S**2 * D_MODEL * (1 / N_MIS + 1 / N_AL)
TRUE_SQ_NORM = np.array([NOISE, 4 * NOISE, 0.0, NOISE / 4])  # one layer each
RELIABILITY = TRUE_SQ_NORM / (TRUE_SQ_NORM + NOISE)  # 0.5, 0.8, 0, 0.2


def planted(seed: int, axis: int = 0, d: int = D_MODEL, n_mis: int = N_MIS, n_al: int = N_AL):
    rng = np.random.default_rng(seed)
    noise = S**2 * d * (1 / n_mis + 1 / n_al)
    truth = np.zeros((len(TRUE_SQ_NORM), d))
    truth[:, axis] = np.sqrt(TRUE_SQ_NORM / NOISE * noise)  # the same reliabilities at any size
    mis = truth / 2 + S * rng.standard_normal((n_mis, len(truth), d))
    al = -truth / 2 + S * rng.standard_normal((n_al, len(truth), d))
    return DirectionSamples(torch.tensor(mis), torch.tensor(al))


def test_the_analytic_reliability_is_the_cosine_of_independent_estimates():
    cos = []
    for i in range(60):
        a, b = planted(1000 + 2 * i).direction(), planted(1001 + 2 * i).direction()
        cos.append(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).numpy())
    np.testing.assert_allclose(np.mean(cos, axis=0), RELIABILITY, atol=0.03)


def test_split_half_matches_the_known_reliability():
    # Averaged over 10 data sets the estimate is within 0.04 of the analytic reliability (its
    # sd per data set is about 0.04 at 0.5, 0.012 at 0.8 and 0.08 at 0); one data set within 0.06
    # where the direction is reliable.
    estimates = np.array([split_half(planted(seed)) for seed in range(10)])
    np.testing.assert_allclose(estimates.mean(axis=0), RELIABILITY, atol=0.04)
    assert abs(estimates[0, 1] - 0.8) < 0.06
    # Deterministic given the seed, different for another.
    one = planted(0)
    assert np.array_equal(split_half(one, seed=3), split_half(one, seed=3))
    assert not np.array_equal(split_half(one, seed=3), split_half(one, seed=4))
    with pytest.raises(DataError, match="1 misaligned and 50 aligned"):
        split_half(DirectionSamples(one.misaligned[:1], one.aligned))


def test_ceiling_is_the_attenuated_cosine_of_identical_truths():
    np.testing.assert_allclose(
        ceiling(np.array([0.5, 0.8, -0.2]), np.array([0.5, 0.2, 0.9])), [0.5, 0.4, 0.0]
    )
    with pytest.raises(ShapeError):
        ceiling(np.zeros(2), np.zeros(3))


def test_bootstrap_interval_of_same_truth_covers_the_ceiling():
    d, n_mis, n_al = 128, 20, 30
    expected = ceiling(RELIABILITY, RELIABILITY)
    covered = []
    for i in range(20):
        a = planted(5000 + 2 * i, d=d, n_mis=n_mis, n_al=n_al)
        b = planted(5001 + 2 * i, d=d, n_mis=n_mis, n_al=n_al)
        value, low, high = bootstrap_cosine(a, b, n_resamples=200, seed=i)
        assert (low <= value).all() and (value <= high).all()
        covered.append((low <= expected) & (expected <= high))
    assert (np.mean(covered, axis=0) >= 0.8).all()
    # A measured ceiling from the samples works the same way on one pair.
    a, b = planted(7, d=d, n_mis=n_mis, n_al=n_al), planted(8, d=d, n_mis=n_mis, n_al=n_al)
    value, low, high = bootstrap_cosine(a, b)
    ceil = ceiling(split_half(a), split_half(b))
    assert low[1] <= ceil[1] <= high[1]
    # Different truths (orthogonal): the cosine and its interval lie far below the ceiling.
    c = planted(9, axis=1, d=d, n_mis=n_mis, n_al=n_al)
    value, low, high = bootstrap_cosine(a, c)
    assert high[1] < 0.3 < ceiling(split_half(a), split_half(c))[1]
    # Same seed, same interval.
    assert all(
        np.array_equal(x, y)
        for x, y in zip(bootstrap_cosine(a, c), (value, low, high), strict=True)
    )
    with pytest.raises(ShapeError, match=r"\(4, 128\) and \(4, 64\)"):
        bootstrap_cosine(a, planted(1, d=64))


def test_samples_file_round_trip_and_errors(tmp_path):
    s = planted(0, d=8)
    s.metadata["n_misaligned"] = N_MIS
    path = s.save(tmp_path / "d.samples.safetensors")
    back = DirectionSamples.load(path)
    assert torch.equal(back.misaligned, s.misaligned) and torch.equal(back.aligned, s.aligned)
    assert back.metadata == {"n_misaligned": N_MIS}
    torch.testing.assert_close(back.direction(), s.misaligned.mean(0) - s.aligned.mean(0))
    assert samples_path(tmp_path / "d.safetensors") == tmp_path / "d.samples.safetensors"

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == SAMPLES_FORMAT
    with pytest.raises(DataError, match="does not exist"):
        DirectionSamples.load(tmp_path / "missing.safetensors")
    save_file(
        {"misaligned": torch.zeros(2, 3, 4)},
        str(tmp_path / "bad.safetensors"),
        metadata={"format": SAMPLES_FORMAT},
    )
    with pytest.raises(
        DataError, match=r"bad.safetensors: needs tensors 'misaligned' and 'aligned'"
    ):
        DirectionSamples.load(tmp_path / "bad.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="other.safetensors: not a direction samples file"):
        DirectionSamples.load(tmp_path / "other.safetensors")
    save_file(
        {"misaligned": torch.zeros(2, 3, 4), "aligned": torch.zeros(5, 2, 4)},
        str(tmp_path / "shapes.safetensors"),
        metadata={"format": SAMPLES_FORMAT},
    )
    with pytest.raises(
        ShapeError, match=r"shapes.safetensors: .*\(2, 3, 4\) and aligned \(5, 2, 4\)"
    ):
        DirectionSamples.load(tmp_path / "shapes.safetensors")


def test_massive_dimensions_carry_a_reliability_that_is_not_the_directions():
    """Three dimensions 100x larger than the rest differ between the sets by a little of their
    size; every other dimension is pure noise. The raw direction looks reliable; without the
    massive dimensions it is noise, and its squared norm sits almost wholly in them."""
    from misdirection import massive
    from misdirection.direction_set import DirectionSet
    from misdirection.directions import DirectionSummary

    gen = torch.Generator().manual_seed(0)
    n, layers, d = 40, 2, 64
    mis = torch.randn(n, layers, d, generator=gen)
    al = torch.randn(n, layers, d, generator=gen)
    for x, shift in ((mis, 3.0), (al, 0.0)):
        x[:, :, :3] += 100.0 + shift  # massive, and 3 units apart between the sets
    dims = massive.find_massive(torch.cat([mis, al]))
    assert dims == [[0, 1, 2], [0, 1, 2]]
    samples = DirectionSamples(mis, al)
    direction = DirectionSet(samples.direction(), {"n_misaligned": n, "n_aligned": n})
    summary = DirectionSummary.of("x", "x.safetensors", direction, samples, warn_below=20)
    assert summary.massive_share[0] > 0.8 and summary.dominated_at(0)
    assert summary.split_half[0] is not None and summary.split_half[0] > 0.8
    lean = summary.split_half_without_massive[0]
    assert lean is not None and abs(lean) < 0.3
    zeroed = massive.without(mis, dims)
    assert float(zeroed[..., :3].abs().sum()) == 0.0 and torch.equal(zeroed[..., 3:], mis[..., 3:])


def test_set_size_plan_is_the_spearman_brown_prophecy():
    from misdirection.reliability import plan_set_sizes

    plan = plan_set_sizes(0.5, 10, 30, layer=3, target=0.8)
    # k = 0.8 * 0.5 / (0.5 * 0.2) = 4; and k r / (1 + (k - 1) r) = 2 / 2.5 = 0.8 indeed.
    assert plan.factor == pytest.approx(4.0)
    assert (plan.n_misaligned_needed, plan.n_aligned_needed) == (40, 120)
    assert plan_set_sizes(0.9, 10, 10, layer=0).factor == 1.0  # already there
    assert plan_set_sizes(-0.1, 10, 10, layer=0).factor is None  # no signal: nothing to plan
    assert "no signal measured" in plan_set_sizes(None, 4, 4, layer=1).text()


def test_smallest_detectable_change_matches_the_two_proportion_power_formula():
    from misdirection.effects import detectable_change
    from misdirection.intervals import wilson
    from misdirection.results import Share

    def share(count, n):
        low, high = wilson(count, n)
        return Share(count=count, n=n, value=count / n, low=low, high=high)

    delta = detectable_change(share(20, 100), 100)
    assert delta == pytest.approx(-0.133, abs=1e-9)
    # At that change the two-proportion z reaches 1.96 + 0.84 (80% power, two-sided 5%).
    p0, p1 = 0.2, 0.2 + delta
    z = -delta / ((p0 * (1 - p0) / 100 + p1 * (1 - p1) / 100) ** 0.5)
    assert 2.80 <= z < 2.83
    # 5 EM answers of 44 cannot fall detectably, even to zero.
    assert detectable_change(share(5, 44), 44) is None
    assert detectable_change(share(5, 44), 44, down=False) == pytest.approx(0.243)
