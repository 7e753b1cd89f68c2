"""Random direction controls: isotropic (norm-matched) and variance-matched (second-moment-matched)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from misdirection.controls import random_control, random_controls, second_moments
from misdirection.direction_references import resolve_reference
from misdirection.directions import DirectionSet, cosine_per_layer
from misdirection.errors import ConfigError, DataError, ShapeError

N, LAYERS, D = 400, 3, 64
SIGMA_HIGH = 10.0  # sd along the planted high-variance axis e0; every other axis has sd 1


def planted() -> tuple[torch.Tensor, DirectionSet]:
    """Activations with one high-variance axis (e0), and a reference lying mostly along it."""
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(N, LAYERS, D, generator=gen, dtype=torch.float64)
    acts[:, :, 0] *= SIGMA_HIGH
    ref = torch.zeros(LAYERS, D)
    for layer in range(LAYERS):
        # 30% of the reference's square along e0: second moment ~ 0.3 * 100 + 0.7 * 1 = 30.7,
        # while directions orthogonal to it reach up to ~ 0.7 * 100 + 0.3 = 70.3.
        ref[layer, 0] = math.sqrt(0.3) * (layer + 1)
        ref[layer, layer + 1] = math.sqrt(0.7) * (layer + 1)
    return acts.float(), DirectionSet(ref, {"method": "mean-diff"})


def test_second_moment_is_uncentred():
    acts = torch.full((5, 1, 3), 2.0)  # constant: zero variance, second moment 4 along e0
    assert second_moments(acts, torch.tensor([[3.0, 0.0, 0.0]])) == pytest.approx([4.0])
    assert second_moments(acts, torch.tensor([[1.0, 1.0, 0.0]])) == pytest.approx([8.0])
    with pytest.raises(ShapeError, match=r"\[n, 1, 3\].*\(5, 2, 3\)"):
        second_moments(torch.zeros(5, 2, 3), torch.zeros(1, 3))


def test_variance_matched_controls_match_the_reference_second_moment():
    acts, ref = planted()
    target = second_moments(acts, ref.directions)
    # By hand: the mean of squared projections on the unit reference; near the planted 30.7.
    unit = ref.directions / ref.norms()[:, None]
    hand = [float(((acts[:, i].double() @ unit[i].double()) ** 2).mean()) for i in range(LAYERS)]
    assert target == pytest.approx(hand, rel=1e-6)  # float32 reference
    assert target == pytest.approx([30.7] * LAYERS, rel=0.2)  # 400 draws: about 7% sd
    matched = random_controls(ref, 5, kind="variance-matched", activations=acts, tolerance=0.01)
    isotropic = random_controls(ref, 5, activations=acts)
    for c in matched:
        achieved = second_moments(acts, c.directions)
        np.testing.assert_allclose(achieved, target, rtol=0.01)
        assert np.abs(cosine_per_layer(c, ref)).max() < 1e-5  # orthogonal to the reference
        torch.testing.assert_close(c.norms(), ref.norms(), rtol=1e-5, atol=0)
        record = c.metadata["random_control"]
        assert record["kind"] == "variance-matched" and record["tolerance"] == 0.01
        np.testing.assert_allclose(record["target_second_moment"], target, rtol=1e-9)
        np.testing.assert_allclose(record["achieved"], achieved, rtol=1e-5)
    for c in isotropic:
        # A random unit vector in 64 dims carries ~ 1 + 99/64 ~ 2.5 of second moment, not ~31.
        assert (second_moments(acts, c.directions) < 0.3 * target).all()
        assert c.metadata["random_control"]["kind"] == "isotropic"
        assert len(c.metadata["random_control"]["achieved"]) == LAYERS
    # Controls differ from each other, and the same seed gives the same control.
    assert not torch.equal(matched[0].directions, matched[1].directions)
    again = random_control(ref, 3, kind="variance-matched", activations=acts, tolerance=0.01)
    assert torch.equal(again.directions, matched[3].directions)


def test_variance_matched_control_round_trips_through_its_reference(tmp_path):
    acts, ref = planted()
    ref.save(tmp_path / "ref.safetensors")
    on_file = DirectionSet.load(tmp_path / "ref.safetensors")
    c = random_control(on_file, 1, kind="variance-matched", activations=acts)
    spec = c.reference()
    assert spec["random_control"]["kind"] == "variance-matched"
    assert "target_second_moment" not in spec["random_control"]  # results are not identity
    back = resolve_reference(spec)
    assert torch.equal(back.directions, c.directions) and back.reference() == spec
    # An isotropic control is rebuilt from its seed alone.
    iso = random_control(on_file, 4, activations=acts)
    assert set(iso.reference()) == {"random_control"}
    assert torch.equal(resolve_reference(iso.reference()).directions, iso.directions)
    with pytest.raises(ConfigError, match="cannot be rebuilt from its seed"):
        resolve_reference({"random_control": spec["random_control"]})


def test_unmatchable_reference_is_a_clear_error():
    acts, _ = planted()
    top = torch.zeros(LAYERS, D)
    top[:, 0] = 1.0  # along the largest axis: every orthogonal direction carries ~1, not ~100
    with pytest.raises(
        DataError, match=r"layer 0: .*reference's 1\d\d\.\d+ .*spanned 0\.\d+ to 1\.\d+"
    ):
        random_control(top, 0, kind="variance-matched", activations=acts)
    with pytest.raises(ConfigError, match="needs the activations"):
        random_control(top, 0, kind="variance-matched")
    with pytest.raises(ConfigError, match="isotropic, variance-matched"):
        random_control(top, 0, kind="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"\[n, 3, 64\]"):
        random_control(top, 0, kind="variance-matched", activations=acts[:, :2])


def test_isotropic_controls_match_reference_norms():
    torch.manual_seed(0)
    ref = DirectionSet(torch.randn(5, 256) * torch.arange(1, 6)[:, None])
    controls = random_controls(ref, 3)
    for c in controls:
        torch.testing.assert_close(c.norms(), ref.norms(), rtol=1e-5, atol=0)
        assert np.abs(cosine_per_layer(c, ref)).max() < 0.35  # random in 256 dims: |cos| ~ 0.06
    assert not torch.equal(controls[0].directions, controls[1].directions)
    assert torch.equal(random_control(ref, 1).directions, controls[1].directions)
    record = controls[2].metadata["random_control"]
    assert record["seed"] == 2 and record["kind"] == "isotropic"
    assert record["target_second_moment"] is None and record["achieved"] is None
    # The draw is a normalised standard normal from a seeded CPU generator (float64).
    draw = torch.randn(5, 256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hand = (draw / draw.norm(dim=1, keepdim=True) * ref.norms().double()[:, None]).float()
    assert torch.equal(controls[1].directions, hand)
    with pytest.raises(ConfigError, match=">= 1"):
        random_controls(ref, 0)
