"""Steering, ablation and weight orthogonalisation: exact invariants on tiny models of every layout."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import ARCHITECTURES, make_tiny_lm

from misdirection.controls import random_control
from misdirection.directions import DirectionSet
from misdirection.errors import ConfigError, LayerIndexError, ShapeError
from misdirection.hooks import block_output_hooks
from misdirection.interventions import (
    Ablate,
    Compose,
    OrthogonalizeWeights,
    Steer,
    from_spec,
    orthogonalize_weights,
)

IDS = torch.tensor([[1, 520, 3310, 30, 4456, 7, 1022], [2, 2, 88, 913, 260, 5, 41]])
MASK = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])

# Capture and interventions leave a model as they found it (see test_interventions.py), so
# read-only tests share one tiny model per layout; tests that edit one build their own.
_tiny = functools.cache(make_tiny_lm)


def _directions(lm, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return DirectionSet(scale * torch.randn(lm.view.n_layers, lm.view.d_model, generator=g))


@torch.no_grad()
def _logits(lm):
    return lm.model(input_ids=IDS, attention_mask=MASK).logits


def _n_hooks(lm):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_ablation_removes_direction_everywhere_also_in_cached_generation(arch):
    lm = _tiny(arch)
    ds = _directions(lm)
    units = ds.unit()
    before = _logits(lm)
    seen: list[tuple[int, int, float]] = []

    def check(layer):
        def fn(h):
            # Padding rows can be exactly zero: 0 <= 1e-4 * 0 holds, so guard only the division.
            rel = (
                ((h.float() @ units[layer]).abs() / h.float().norm(dim=-1).clamp_min(1e-30))
                .max()
                .item()
            )
            seen.append((layer, h.shape[1], rel))

        return fn

    checks = {i: check(i) for i in range(lm.view.n_layers)}
    with (
        torch.no_grad(),
        Ablate(ds, "all").apply(lm.model),
        block_output_hooks(lm.view.blocks, checks),
    ):
        _logits(lm)
        lm.model.generate(
            input_ids=IDS,
            attention_mask=MASK,
            max_new_tokens=4,
            do_sample=False,
            use_cache=True,
            pad_token_id=2,
        )
    assert max(rel for _, _, rel in seen) < 1e-4
    assert {layer for layer, _, _ in seen} == set(range(lm.view.n_layers))
    assert any(t == 1 for _, t, _ in seen)  # cached decoding steps (one new token) were hooked
    assert torch.equal(_logits(lm), before) and _n_hooks(lm) == 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_steering_scale_zero_is_bit_identical_and_exit_restores(arch):
    lm = _tiny(arch)
    ds = _directions(lm)
    before = _logits(lm)
    with Steer(ds, "all", 0.0).apply(lm.model):
        assert torch.equal(_logits(lm), before)
    with Steer(ds, [1, 2], 4.0).apply(lm.model):
        assert not torch.allclose(_logits(lm), before)
    assert torch.equal(_logits(lm), before) and _n_hooks(lm) == 0


def test_steering_adds_scaled_vector_at_the_chosen_layer():
    lm = _tiny("llama")
    ds = _directions(lm)
    got: dict[str, torch.Tensor] = {}
    rec = {
        1: lambda h: got.__setitem__("l1", h.clone()),
        0: lambda h: got.__setitem__("l0", h.clone()),
    }
    with torch.no_grad():
        with block_output_hooks(lm.view.blocks, rec):
            _logits(lm)
        base = dict(got)
        with Steer(ds, 1, 2.5).apply(lm.model), block_output_hooks(lm.view.blocks, rec):
            _logits(lm)
    assert torch.equal(got["l0"], base["l0"])  # upstream untouched
    torch.testing.assert_close(got["l1"], base["l1"] + 2.5 * ds.directions[1], rtol=0, atol=1e-5)


def test_steering_acts_the_same_with_and_without_kv_cache():
    lm = _tiny("qwen2")
    steer = Steer(_directions(lm, scale=3.0), [0, 2], 1.0)
    kw = dict(
        input_ids=IDS,
        attention_mask=MASK,
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=2,
        output_scores=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad(), steer.apply(lm.model):
        cached = lm.model.generate(**kw, use_cache=True)
        plain = lm.model.generate(**kw, use_cache=False)
    assert torch.equal(cached.sequences, plain.sequences)
    torch.testing.assert_close(
        torch.stack(cached.scores), torch.stack(plain.scores), rtol=1e-4, atol=1e-4
    )
    with torch.no_grad():
        unsteered = lm.model.generate(**kw, use_cache=True)
    assert not torch.allclose(torch.stack(cached.scores), torch.stack(unsteered.scores))


def test_hooks_are_removed_on_exceptions():
    lm = _tiny("llama")
    before = _logits(lm)
    with pytest.raises(RuntimeError, match="boom"), Ablate(_directions(lm), "all").apply(lm.model):
        raise RuntimeError("boom")
    ow = OrthogonalizeWeights(_directions(lm), "all", source_layer=1)
    with pytest.raises(RuntimeError, match="boom"), ow.apply(lm.model):
        raise RuntimeError("boom")
    assert _n_hooks(lm) == 0 and torch.equal(_logits(lm), before)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "phi3"])
def test_weight_form_equals_full_activation_ablation(arch):
    lm = _tiny(arch)
    ds = _directions(lm)
    before = _logits(lm)
    for layers in ("all", 1):  # all blocks, and blocks 0..1 only
        ow = OrthogonalizeWeights(ds, layers, source_layer=2)
        with ow.apply(lm.model):
            weights = _logits(lm)
        with ow.equivalent_ablation().apply(lm.model):
            activations = _logits(lm)
        torch.testing.assert_close(weights, activations, rtol=1e-4, atol=1e-4)
        assert (weights - before).abs().max() > 1e-2  # the edit is not a no-op
    # Block-output-only ablation is a different intervention (the MLP reads the attention's u part).
    with Ablate(ds, "all", "single", 2).apply(lm.model):
        assert (_logits(lm) - weights).abs().max() > 1e-3
    assert torch.equal(_logits(lm), before)


def test_permanent_weight_edit_with_tied_embeddings_and_lora():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lm = make_tiny_lm("llama")
    cfg = lm.model.config
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    tied = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    tied.tie_weights()
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    lora = LoraConfig(r=2, target_modules=["o_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(tied, lora).eval()
    ds = _directions(lm)
    head = model.get_output_embeddings().weight.detach().clone()
    with torch.no_grad():
        with Ablate(ds, "all", "single", 0, sites="full").apply(model):
            expected = model(input_ids=IDS, attention_mask=MASK).logits
        names = orthogonalize_weights(model, ds, "all", source_layer=0)
        got = model(input_ids=IDS, attention_mask=MASK).logits
    assert any("lora_B" in n for n in names) and "embed_tokens" in names
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(model.get_output_embeddings().weight, head)  # the unembedding is untouched
    u = ds.unit()[0]
    assert (model.get_input_embeddings().weight @ u).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_weight_form_refused_for_post_norm_blocks(arch):
    lm = _tiny(arch)
    with (
        pytest.raises(ConfigError, match="Gemma 2/3"),
        OrthogonalizeWeights(_directions(lm), "all", source_layer=0).apply(lm.model),
    ):
        pass


def test_random_control_steers_with_reference_norm():
    lm = _tiny("llama")
    ds = _directions(lm, scale=2.0)
    control = random_control(ds, seed=5)
    vecs = Steer(control, "all", 1.0).vectors(lm.model)
    for layer, v in vecs.items():
        assert v.norm().item() == pytest.approx(ds.directions[layer].norm().item(), rel=1e-5)


def test_specs_round_trip(tmp_path):
    lm = _tiny("llama")
    ds = _directions(lm)
    path = tmp_path / "d.safetensors"
    ds.save(path)
    on_file = DirectionSet.load(path)
    interventions = [
        Steer(on_file, [1], 2.0),
        Steer(ds.directions[2], "all", -1.0),  # a bare tensor: the used row is inlined
        Ablate(on_file, [0, 3]),
        Ablate(random_control(on_file, 7), "all", "single", 1),
        OrthogonalizeWeights(ds, 2, source_layer=3),
        Compose([Steer(ds, 0, 1.0), Ablate(on_file, "all", "single", 2, sites="full")]),
    ]
    for iv in interventions:
        spec = json.loads(json.dumps(iv.spec()))
        with iv.apply(lm.model):
            a = _logits(lm)
        with from_spec(spec).apply(lm.model):
            b = _logits(lm)
        assert torch.equal(a, b), spec["kind"]


def test_clear_errors_for_wrong_width_and_layers():
    lm = _tiny("llama")
    with (
        pytest.raises(ShapeError, match=r"shape \(4, 32\).*\(4, 64\)"),
        Steer(torch.zeros(4, 32), 0, 1.0).apply(lm.model),
    ):
        pass
    with (
        pytest.raises(ShapeError, match=r"shape \(6, 64\).*\(4, 64\)"),
        Ablate(torch.ones(6, 64), "all").apply(lm.model),
    ):
        pass
    with (
        pytest.raises(LayerIndexError, match=r"valid 0\.\.3"),
        Steer(torch.ones(64), [1, 7], 1.0).apply(lm.model),
    ):
        pass
    with (
        pytest.raises(LayerIndexError, match=r"valid 0\.\.3"),
        Ablate(_directions(lm), "all", "single", source_layer=9).apply(lm.model),
    ):
        pass
    with pytest.raises(ConfigError, match="source_layer"):
        Ablate(_directions(lm), "all", "single")
    assert _n_hooks(lm) == 0


def test_from_spec_rebuilds_every_intervention_kind(tmp_path):
    """Every intervention the package has comes back from its spec() with the same spec."""
    import copy

    from peft import LoraConfig, get_peft_model

    from misdirection.contrastive import AdapterOff
    from misdirection.controls import random_controls
    from misdirection.lora import AdapterScaling, BVectorAblation

    lm = _tiny("llama")
    ds = _directions(lm)
    ds.save(tmp_path / "d.safetensors")
    on_file = DirectionSet.load(tmp_path / "d.safetensors")
    acts = torch.randn(12, ds.n_layers, ds.d_model)
    (matched,) = random_controls(on_file, 1, 3, kind="variance-matched", activations=acts)
    torch.manual_seed(0)
    peft_model = get_peft_model(
        copy.deepcopy(lm.model),
        LoraConfig(r=1, lora_alpha=8, target_modules=["down_proj"], init_lora_weights=False),
    )
    interventions = [
        Steer(on_file, [1], 2.0),
        Ablate(on_file, "all"),
        Ablate(matched, "all"),
        OrthogonalizeWeights(on_file, 2, source_layer=1),
        Compose([Steer(on_file, 0, 1.0), Ablate(on_file, "all", "single", 2)]),
        AdapterScaling.from_strings(["all=0.5"]),
        BVectorAblation(on_file),
        AdapterOff(),
    ]
    kinds = set()
    for iv in interventions:
        spec = json.loads(json.dumps(iv.spec()))
        rebuilt = from_spec(spec)
        assert type(rebuilt) is type(iv) and rebuilt.spec() == iv.spec(), spec["kind"]
        kinds.add(spec["kind"])
        target = (
            peft_model
            if spec["kind"] in ("scale-adapters", "ablate-b", "adapter-off")
            else lm.model
        )
        with rebuilt.apply(target):
            pass
    assert kinds == {
        "steer",
        "ablate",
        "orthogonalize",
        "compose",
        "scale-adapters",
        "ablate-b",
        "adapter-off",
    }
