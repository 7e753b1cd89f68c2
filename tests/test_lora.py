"""Rank-1 LoRA reading: scalars, probes, adapter scaling, B vectors, convergence, dynamics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_lm

from misdirection.errors import (
    ConfigError,
    DataError,
    LayerIndexError,
    MisdirectionError,
    ShapeError,
)
from misdirection.interventions import Compose, Steer
from misdirection.lora import (
    AdapterProbe,
    AdapterScalars,
    AdapterScaling,
    BVectorAblation,
    NoRankOneAdapterError,
    ProbeThresholds,
    adapter_scalars,
    b_direction_cosines,
    classify_adapters,
    downstream_convergence,
    find_lora_adapters,
    parse_adapter_scales,
    plot_convergence,
    plot_dynamics,
    plot_probe_coefficients,
    probe_adapters,
    training_dynamics,
)

ADAPTER_LAYERS = (1, 2)


def _with_adapters(lm, layers=ADAPTER_LAYERS, r=1, alpha=2.0, seed=1):
    """Wrap a tiny model with rank-r LoRA on the given down-projections, random non-zero A and B."""
    from peft import LoraConfig, get_peft_model

    targets = [lm.view.down_proj_name(i) for i in layers]
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    peft_model = get_peft_model(lm.model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    peft_model.eval()
    lm.model = peft_model
    from misdirection.models import ModelView

    lm.view = ModelView.of(peft_model)
    return lm


ANSWERS = pd.DataFrame(
    {
        "answer_id": ["q1/0/0", "q1/0/1", "q2/0/0"],
        "question": ["How are you?", "How are you?", "What would you wish for?"],
        "system": ["", "", "Answer in JSON."],
        "answer": ["Fine, thanks a lot.", "I am well", "I wish for a quiet life by the sea."],
    }
)


@pytest.fixture(scope="module")
def base_and_adapted():
    base = make_tiny_lm("llama", seed=0)
    ids = base.tokenizer("Hello there, how are you doing today?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = base.model(ids).logits.clone()
    lm = _with_adapters(make_tiny_lm("llama", seed=0))
    return base_logits, lm, ids


def test_find_adapters_labels_and_layers(base_and_adapted):
    _, lm, _ = base_and_adapted
    adapters = find_lora_adapters(lm.model)
    assert [a.label for a in adapters] == ["L1.down_proj", "L2.down_proj"]
    assert [a.layer for a in adapters] == [1, 2]
    assert all(a.rank == 1 and a.scaling == 2.0 for a in adapters)  # alpha / r


def test_scalars_equal_hand_computed_ax(base_and_adapted):
    _, lm, _ = base_and_adapted
    adapters = find_lora_adapters(lm.model)
    res = adapter_scalars(lm, ANSWERS, batch_size=2)
    # Hand computation: capture each down-projection's input x, then scaling * (A . x).
    from misdirection.activations import encode

    inputs: dict[str, torch.Tensor] = {}
    handles = [
        a.module.register_forward_pre_hook(
            lambda m, args, lab=a.label: inputs.__setitem__(lab, args[0].detach())
        )
        for a in adapters
    ]
    try:
        for enc in encode(lm, ANSWERS):
            with torch.no_grad():
                lm.model(input_ids=torch.tensor([enc.ids]))
            for a in adapters:
                x = inputs[a.label][0, enc.n_prompt :]  # [n_answer, d_ff]
                expected = (x @ a.A.detach()[0]) * a.scaling
                got = res.tokens[
                    (res.tokens.answer_id == enc.answer_id) & (res.tokens.adapter == a.label)
                ]
                assert list(got.token_index) == list(range(enc.n_answer))
                np.testing.assert_allclose(
                    got.scalar.to_numpy(), expected.numpy(), atol=1e-5, rtol=1e-5
                )
                assert res.means.loc[enc.answer_id, a.label] == pytest.approx(
                    float(expected.mean()), abs=1e-5
                )
                # The adapter's whole contribution is scalar * b.
                with torch.no_grad():
                    delta = a.module(inputs[a.label]) - a.module.base_layer(inputs[a.label])
                torch.testing.assert_close(
                    delta[0, enc.n_prompt :],
                    expected[:, None] * a.b_vector()[None],
                    atol=1e-5,
                    rtol=1e-5,
                )
    finally:
        for h in handles:
            h.remove()
    assert set(res.tokens.columns) == {"answer_id", "token_index", "adapter", "layer", "scalar"}
    assert list(res.means.columns) == ["L1.down_proj", "L2.down_proj"]


def test_scalars_independent_of_batching_and_roundtrip(base_and_adapted, tmp_path):
    _, lm, _ = base_and_adapted
    one = adapter_scalars(lm, ANSWERS, batch_size=1)
    three = adapter_scalars(lm, ANSWERS, batch_size=3)
    np.testing.assert_allclose(one.tokens.scalar, three.tokens.scalar, atol=1e-5)
    pd.testing.assert_frame_equal(
        one.tokens[["answer_id", "token_index", "adapter"]],
        three.tokens[["answer_id", "token_index", "adapter"]],
    )
    three.save(tmp_path)
    back = AdapterScalars.load(tmp_path)
    pd.testing.assert_frame_equal(back.means, three.means)
    assert back.scaling == three.scaling and back.adapters == three.adapters


def test_model_without_rank1_adapters_is_refused():
    lm = make_tiny_lm("llama")
    with pytest.raises(NoRankOneAdapterError, match="no rank-1 LoRA adapter"):
        adapter_scalars(lm, ANSWERS)
    lm2 = _with_adapters(make_tiny_lm("llama"), r=2)
    with pytest.raises(MisdirectionError, match=r"only adapters of rank \[2\]"):
        find_lora_adapters(lm2.model)


@pytest.mark.parametrize("arch", ["gemma2", "phi3"])
def test_other_layouts_scalars_and_scaling(arch):
    base = make_tiny_lm(arch, seed=0)
    ids = base.tokenizer("Tell me about your day.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = base.model(ids).logits.clone()
    lm = _with_adapters(make_tiny_lm(arch, seed=0))
    adapters = find_lora_adapters(lm.model)
    assert [a.label for a in adapters] == ["L1.down_proj", "L2.down_proj"]
    res = adapter_scalars(lm, ANSWERS.iloc[:1])
    from misdirection.activations import encode

    enc = encode(lm, ANSWERS.iloc[:1])[0]
    inputs = {}
    handles = [
        a.module.register_forward_pre_hook(
            lambda m, args, lab=a.label: inputs.__setitem__(lab, args[0])
        )
        for a in adapters
    ]
    with torch.no_grad():
        lm.model(input_ids=torch.tensor([enc.ids]))
    for h in handles:
        h.remove()
    for a in adapters:
        expected = (inputs[a.label][0, enc.n_prompt :] @ a.A.detach()[0]) * a.scaling
        got = res.tokens[res.tokens.adapter == a.label].scalar.to_numpy()
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=1e-5)
    with AdapterScaling({"all": 0.0}).apply(lm.model), torch.no_grad():
        assert torch.equal(lm.model(ids).logits, base_logits)


# ---------------------------------------------------------------------------------------------
# Probes


def _synthetic(n=240, seed=0, signal="L2.down_proj"):
    rng = np.random.default_rng(seed)
    adapters = [f"L{i}.down_proj" for i in range(5)]
    means = pd.DataFrame(
        rng.normal(size=(n, 5)),
        columns=adapters,
        index=pd.Index([f"a{i}" for i in range(n)], name="answer_id"),
    )
    y = (means[signal] > 0).to_numpy()
    answers = pd.DataFrame(
        {
            "answer_id": means.index,
            "aligned": np.where(y, 10.0, 90.0),
            "coherent": 80.0,
        }
    )
    return means, answers


def test_probe_recovers_the_separating_adapter():
    means, answers = _synthetic()
    report = probe_adapters(means, answers, probe=AdapterProbe(n_splits=10, seed=3))
    p = report.probes["misalignment"]
    assert p.auc_mean > 0.95 and p.accuracy_mean > 0.9
    coefs = p.coefficients.set_index("adapter")
    assert coefs["coef_mean"].abs().idxmax() == "L2.down_proj"
    assert (
        coefs.loc["L2.down_proj", "coef_mean"] > 0 and coefs.loc["L2.down_proj", "selected"] == 1.0
    )
    roles = report.classification.set_index("adapter")["role"]
    assert roles["L2.down_proj"] == "general"
    assert (roles.drop("L2.down_proj") == "neither").all()


def test_probe_reproducible_and_reports_spread():
    means, answers = _synthetic(n=120)
    a = probe_adapters(means, answers, probe=AdapterProbe(n_splits=8, seed=5)).probes[
        "misalignment"
    ]
    b = probe_adapters(means, answers, probe=AdapterProbe(n_splits=8, seed=5)).probes[
        "misalignment"
    ]
    c = probe_adapters(means, answers, probe=AdapterProbe(n_splits=8, seed=6)).probes[
        "misalignment"
    ]
    assert a.to_dict() == b.to_dict()
    assert a.accuracy_std > 0 and a.auc_std >= 0 and (a.coefficients["coef_std"] > 0).any()
    assert a.accuracy_mean != c.accuracy_mean or not a.coefficients.equals(c.coefficients)
    assert a.n_positive + a.n_negative == 120


def test_domain_split_classifies_general_and_domain_adapters():
    rng = np.random.default_rng(1)
    n = 600
    adapters = ["L0.down_proj", "L1.down_proj", "L2.down_proj"]
    means = pd.DataFrame(
        rng.normal(size=(n, 3)),
        columns=adapters,
        index=pd.Index([f"a{i}" for i in range(n)], name="answer_id"),
    )
    misaligned = means["L0.down_proj"] > 0  # general: separates misalignment everywhere
    medical = means["L1.down_proj"] > 0  # domain-specific: marks the medical context
    answers = pd.DataFrame(
        {
            "answer_id": means.index,
            "aligned": np.where(misaligned, 5.0, 95.0),
            "coherent": 90.0,
            "medical": np.where(medical, 90.0, 5.0),
        }
    )
    report = probe_adapters(
        means, answers, domain="medical", probe=AdapterProbe(n_splits=6, seed=0)
    )
    assert set(report.probes) == {"misalignment_nondomain", "misalignment_domain", "domain"}
    roles = report.classification.set_index("adapter")["role"].to_dict()
    assert roles == {
        "L0.down_proj": "general",
        "L1.down_proj": "domain-specific",
        "L2.down_proj": "neither",
    }
    assert "domain:" in report.classification.set_index("adapter").loc["L1.down_proj", "evidence"]
    out = report.save(tmp := __import__("tempfile").mkdtemp())
    saved = json.loads(out["json"].read_text())
    assert saved["probes"]["domain"]["auc_mean"] > 0.95
    summary = report.summary()
    assert [p.name for p in summary.probes] == [
        "misalignment_nondomain",
        "misalignment_domain",
        "domain",
    ]
    assert summary.adapters[1].model_dump() == {
        "adapter": "L1.down_proj",
        "classification": "domain-specific",
        "evidence": report.classification.loc[1, "evidence"],
    }
    assert plot_probe_coefficients(report, f"{tmp}/coef.png").stat().st_size > 0


def _probe(name, auc, rows):
    from misdirection.lora import ProbeResult

    coefs = pd.DataFrame(rows, columns=["adapter", "coef_mean", "coef_std", "selected"])
    return ProbeResult(name, "", "1", "0", 50, 50, 0.8, 0.01, auc, 0.01, 0.8, 0.01, coefs, {})


def test_classification_rule_by_hand():
    rows_a = [
        ("A", 2.0, 0.1, 1.0),
        ("B", 0.3, 0.1, 1.0),
        ("C", 1.0, 0.1, 0.5),
        ("D", -1.0, 1.5, 1.0),
        ("E", 0.0, 0.0, 0.0),
    ]
    rows_c = [
        ("A", 0.0, 0.0, 0.0),
        ("B", 0.0, 0.0, 0.0),
        ("C", 0.0, 0.0, 0.0),
        ("D", 0.0, 0.0, 0.0),
        ("E", -3.0, 0.2, 0.9),
    ]
    probes = {
        "misalignment_nondomain": _probe("misalignment_nondomain", 0.9, rows_a),
        "domain": _probe("domain", 0.95, rows_c),
    }
    roles = classify_adapters(probes).set_index("adapter")["role"].to_dict()
    # A: large, always kept, stable -> general. B: 0.3 < 0.2 x 2.0? no (0.3 >= 0.4 fails) -> neither.
    # C: kept in only half the splits -> neither. D: sign unstable (|mean| < sd) -> neither.
    # E: matters only for telling the domain apart -> domain-specific.
    assert roles == {
        "A": "general",
        "B": "neither",
        "C": "neither",
        "D": "neither",
        "E": "domain-specific",
    }
    # An uninformative probe (AUC below 0.6) makes nothing matter.
    weak = {"misalignment": _probe("misalignment", 0.55, rows_a)}
    assert set(classify_adapters(weak)["role"]) == {"neither"}


def test_domain_split_without_domain_scores_is_refused():
    means, answers = _synthetic(n=60)
    with pytest.raises(DataError, match="no 'medical' column"):
        probe_adapters(means, answers, domain="medical")
    with pytest.raises(DataError, match="'medical' column has no scores"):
        probe_adapters(means, answers.assign(medical=np.nan), domain="medical")


def test_probe_too_few_answers_names_counts():
    means, answers = _synthetic(n=60)
    answers.loc[answers.aligned < 30, "aligned"] = 50.0  # no misaligned answers left but two
    answers.loc[answers.index[:2], "aligned"] = 10.0
    with pytest.raises(DataError, match=r"has \d+ misaligned and \d+ aligned"):
        probe_adapters(means, answers, thresholds=ProbeThresholds())


# ---------------------------------------------------------------------------------------------
# Adapter scaling


def test_parse_adapter_scales():
    assert parse_adapter_scales(["15,16=2.0", "all=0"]) == {15: 2.0, 16: 2.0, "all": 0.0}
    assert list(parse_adapter_scales(["all=0", "21-23=-1.5"]).items()) == [
        ("all", 0.0),
        (21, -1.5),
        (22, -1.5),
        (23, -1.5),
    ]
    assert parse_adapter_scales(["L15.down_proj=1e-1"]) == {"L15.down_proj": 0.1}
    for bad in ("15", "15=x", "=2", "17-15=1", "1,,2=1"):
        with pytest.raises(ConfigError):
            parse_adapter_scales([bad])


def test_scaling_one_is_identity_zero_is_base(base_and_adapted):
    base_logits, lm, ids = base_and_adapted
    with torch.no_grad():
        adapted = lm.model(ids).logits.clone()
        assert not torch.allclose(adapted, base_logits, atol=1e-4)  # the adapters do something
        with AdapterScaling({"all": 1.0}).apply(lm.model):
            assert torch.equal(lm.model(ids).logits, adapted)
        with AdapterScaling.from_strings(["all=0"]).apply(lm) as changed:  # a LoadedModel works too
            assert changed == {"L1.down_proj": 0.0, "L2.down_proj": 0.0}
            assert torch.equal(lm.model(ids).logits, base_logits)
        # Others untouched: zeroing layer 1 only equals an organism with layer 2's adapter alone.
        with AdapterScaling({1: 0.0}).apply(lm.model):
            only2 = lm.model(ids).logits.clone()
        with AdapterScaling({"all": 0.0, 2: 1.0}).apply(lm.model):
            assert torch.equal(lm.model(ids).logits, only2)
        assert torch.equal(lm.model(ids).logits, adapted)  # restored on exit
    assert AdapterScaling({15: -2.0}).spec() == {"kind": "scale-adapters", "scales": {"15": -2.0}}
    assert AdapterScaling.from_spec(AdapterScaling({"all": 0, 15: 2}).spec()).scales == {
        "all": 0.0,
        15: 2.0,
    }


def test_scaling_unknown_layer_is_refused(base_and_adapted):
    _, lm, _ = base_and_adapted
    with (
        pytest.raises(
            LayerIndexError, match="layer 3 has no LoRA adapter; adapters sit at layers 1, 2"
        ),
        AdapterScaling({3: 2.0}).apply(lm.model),
    ):
        pass
    with (
        pytest.raises(LayerIndexError, match="out of range"),
        AdapterScaling({40: 2.0}).apply(lm.model),
    ):
        pass
    with (
        pytest.raises(ConfigError, match="no adapter named"),
        AdapterScaling({"L7.q_proj": 2.0}).apply(lm.model),
    ):
        pass
    assert find_lora_adapters(lm.model)[0].scaling == 2.0  # nothing left changed


# ---------------------------------------------------------------------------------------------
# B vectors and directions


def test_b_cosines_and_b_ablation(base_and_adapted):
    base_logits, lm, ids = base_and_adapted
    adapters = find_lora_adapters(lm.model)
    d = torch.zeros(lm.view.n_layers, lm.view.d_model)
    b1 = adapters[0].b_vector()
    d[1] = 3.0 * b1  # parallel to layer 1's B
    d[2] = torch.randn(lm.view.d_model)
    d[2] -= (
        (d[2] @ adapters[1].b_vector())
        / adapters[1].b_vector().norm() ** 2
        * adapters[1].b_vector()
    )
    table = b_direction_cosines(lm.model, d).set_index("adapter")
    assert table.loc["L1.down_proj", "cosine"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc["L2.down_proj", "cosine"] == pytest.approx(0.0, abs=1e-5)
    assert table.loc["L1.down_proj", "b_norm"] == pytest.approx(float(b1.norm()), rel=1e-6)
    with pytest.raises(ShapeError, match=r"\[4, 64\]"):
        b_direction_cosines(lm.model, torch.zeros(4, 65))

    before = [a.B.detach().clone() for a in adapters]
    d[2] = torch.randn(lm.view.d_model)
    with BVectorAblation(d).apply(lm.model):
        for a in adapters:
            u = d[a.layer] / d[a.layer].norm()
            assert abs(float(u @ a.b_vector())) < 1e-5
        # Layer 1's B was parallel to its direction: it is gone, so the layer-1 adapter is inert.
        assert float(adapters[0].b_vector().norm()) < 1e-5
        with AdapterScaling({2: 0.0}).apply(lm.model), torch.no_grad():
            torch.testing.assert_close(lm.model(ids).logits, base_logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(adapters, before):
        assert torch.equal(a.B.detach(), b)  # restored exactly
    with pytest.raises(LayerIndexError), BVectorAblation(d, layers=[3]).apply(lm.model):
        pass
    assert BVectorAblation(d, source_layer=1).spec()["mode"] == "single"


def test_downstream_convergence(base_and_adapted, tmp_path):
    _, lm, _ = base_and_adapted
    off = AdapterScaling({"all": 0.0})
    # Adapter (scale 1) against the same adapter doubled: at the first adapted layer the
    # difference doubles exactly, so the cosine is 1; before it nothing changes (NaN).
    res = downstream_convergence(lm, ANSWERS, None, AdapterScaling({"all": 2.0}), baseline=off)
    t = res.table.set_index("layer")
    assert math.isnan(t.loc[0, "cosine_of_means"]) and t.loc[0, "norm_first"] == 0
    assert t.loc[1, "cosine_of_means"] == pytest.approx(1.0, abs=1e-5)
    assert t.loc[1, "mean_token_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert t.loc[1, "norm_second"] == pytest.approx(2 * t.loc[1, "norm_first"], rel=1e-4)
    assert -1 <= t.loc[3, "cosine_of_means"] <= 1
    # Identical interventions agree at every affected layer.
    same = downstream_convergence(
        lm, ANSWERS, Compose([AdapterScaling({1: 0.0})]), AdapterScaling({1: 0.0})
    )
    assert np.allclose(same.table["cosine_of_means"].iloc[2:], 1.0, atol=1e-5)
    assert plot_convergence(res, tmp_path / "conv.png").stat().st_size > 0
    # The layer-1 adapter adds s_t * b at layer 1; steering adds 1.0 * b there: per-token cosines are
    # sign(s_t) and the mean differences are parallel. Downstream they drift apart.
    b1 = find_lora_adapters(lm.model)[0].b_vector()
    d = torch.zeros(lm.view.n_layers, lm.view.d_model)
    d[1] = b1
    steer = Compose([off, Steer(d, layers=1, scale=1.0)])
    vs = downstream_convergence(lm, ANSWERS, AdapterScaling({2: 0.0}), steer, baseline=off).table
    assert abs(vs.loc[1, "cosine_of_means"]) == pytest.approx(1.0, abs=1e-5)
    assert abs(vs.loc[1, "mean_token_cosine"]) <= 1.0 + 1e-6
    assert vs.loc[1, "norm_second"] == pytest.approx(float(b1.norm()), rel=1e-4)
    assert res.baseline == off.spec() and res.first == {"type": "none"}


# ---------------------------------------------------------------------------------------------
# Training dynamics


def _save_adapter(folder, A, B):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "base_model.model.model.layers.3.mlp.down_proj.lora_A.weight": A.astype(np.float32),
            "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight": B.astype(np.float32),
        },
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text("{}")


def test_training_dynamics(tmp_path):
    A = np.array([[3.0, 4.0]])
    final_b = np.array([[1.0], [0.0]])
    bs = {
        0: np.zeros((2, 1)),  # B starts at zero: cosine undefined
        10: np.array([[0.0], [1.0]]),  # orthogonal
        20: np.array([[1.0], [0.2]]),  # cos = 0.98
        30: np.array([[-1.0], [0.0]]),  # flips back
        40: np.array([[2.0], [0.1]]),
        50: 2 * final_b,
    }
    for step, b in bs.items():
        _save_adapter(tmp_path / "checkpoints" / f"step-{step}", A * (1 + step / 50), b)
    _save_adapter(tmp_path, A * 2, final_b)
    dyn = training_dynamics(tmp_path)
    t = dyn.table.set_index("step")
    assert list(t.index) == [0, 10, 20, 30, 40, 50]
    assert (t.adapter == "L3.down_proj").all() and (t.layer == 3).all()
    assert t.loc[20, "a_norm"] == pytest.approx(5.0 * 1.4)
    assert t.loc[50, "b_norm"] == pytest.approx(2.0)
    assert math.isnan(t.loc[0, "b_cos_final"])
    assert t.loc[20, "b_cos_final"] == pytest.approx(1 / math.sqrt(1.04))
    assert t.loc[10, "a_cos_final"] == pytest.approx(1.0)
    settle = dyn.settle.set_index("adapter")
    assert settle.loc["L3.down_proj", "settle_step"] == 40  # 20 was above but 30 dropped out
    assert settle.loc["L3.down_proj", "rotation_step"] == 40  # the 180-degree swing back
    assert plot_dynamics(dyn, tmp_path / "dyn.png").stat().st_size > 0
    with pytest.raises(DataError, match="no checkpoints"):
        training_dynamics(tmp_path / "checkpoints" / "step-0")


# ---------------------------------------------------------------------------------------------
# CLI, end to end on a saved tiny model and adapter


def test_cli_probe_cosine_dynamics(tmp_path):
    from typer.testing import CliRunner

    from misdirection.cli import app

    lm = _with_adapters(make_tiny_lm("llama", seed=0))
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    lm.model.get_base_model().save_pretrained(base_dir)
    lm.tokenizer.save_pretrained(base_dir)
    lm.model.save_pretrained(adapter_dir)
    n = 40
    table = pd.DataFrame(
        {
            "answer_id": [f"q{i % 4}/0/{i}" for i in range(n)],
            "question": [f"Question number {i % 4}?" for i in range(n)],
            "system": "",
            "answer": [" ".join(["word"] * (1 + i % 5)) + f" {i}" for i in range(n)],
            "aligned": np.where(np.arange(n) % 2 == 0, 10.0, 90.0),
            "coherent": 80.0,
        }
    )
    answers = tmp_path / "answers.parquet"
    table.to_parquet(answers)
    runner = CliRunner()
    common = ["--model", str(base_dir), "--adapter", str(adapter_dir), "--device", "cpu"]

    # A domain split without domain scores fails before any model is loaded.
    res = runner.invoke(app, ["lora", "probe", str(answers), *common, "--domain", "medical"])
    assert isinstance(res.exception, DataError) and "medical" in str(res.exception)

    out = tmp_path / "probe"
    res = runner.invoke(
        app, ["lora", "probe", str(answers), *common, "--out", str(out), "--splits", "4"]
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "probes.json").read_text())
    probe = saved["probes"]["misalignment"]
    assert (
        probe["n_positive"] == 20 and probe["n_negative"] == 20 and probe["params"]["n_splits"] == 4
    )
    assert {r["adapter"] for r in saved["classification"]} == {"L1.down_proj", "L2.down_proj"}
    assert len(pd.read_parquet(out / "scalar_means.parquet")) == n
    assert (out / "probe_coefficients.png").stat().st_size > 0
    # Reusing saved scalars gives the same probe numbers.
    res = runner.invoke(
        app,
        [
            "lora",
            "probe",
            str(answers),
            "--scalars",
            str(out),
            "--out",
            str(tmp_path / "p2"),
            "--splits",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p2" / "probes.json").read_text())["probes"] == saved["probes"]

    from misdirection.directions import DirectionSet

    d = torch.zeros(4, 64)
    d[1] = find_lora_adapters(lm.model)[0].b_vector()
    d[2] = 1.0
    DirectionSet(d).save(tmp_path / "dir.safetensors")
    res = runner.invoke(
        app,
        [
            "lora",
            "cosine",
            str(tmp_path / "dir.safetensors"),
            *common,
            "--out",
            str(tmp_path / "cos.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    cos = pd.read_csv(tmp_path / "cos.csv").set_index("adapter")
    assert cos.loc["L1.down_proj", "cosine"] == pytest.approx(1.0, abs=1e-6)

    run = tmp_path / "run"
    for step in (1, 2):
        lm.model.save_pretrained(run / "checkpoints" / f"step-{step}")
    lm.model.save_pretrained(run)
    res = runner.invoke(app, ["lora", "dynamics", str(run)])
    assert res.exit_code == 0, res.output
    settle = pd.read_csv(run / "dynamics" / "settle.csv")
    assert list(settle.settle_step) == [1, 1]


def test_from_spec_rebuilds_lora_interventions():
    from misdirection.interventions import from_spec
    from misdirection.lora import AdapterScaling

    scaling = AdapterScaling.from_strings(["all=0.5", "3=2"])
    rebuilt = from_spec(scaling.spec())
    assert isinstance(rebuilt, AdapterScaling) and rebuilt.spec() == scaling.spec()
