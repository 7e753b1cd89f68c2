"""Capture of per-answer mean residuals: exact spans, equality with output_hidden_states, batching."""

from __future__ import annotations

import functools

import pandas as pd
import pytest
import torch
from conftest import ARCHITECTURES, make_tiny_lm

from misdirection.activations import (
    Activations,
    capture,
    capture_activations,
    encode,
    table_columns,
)
from misdirection.errors import ConfigError, DataError
from misdirection.models import LAYER_CONVENTION, render_chat

TABLE = pd.DataFrame(
    {
        "answer_id": ["q1/0/0", "q2/0/0", "q1/0/1"],
        "question": [
            "How do I feel better?",
            "What is 2+2? Explain briefly.",
            "How do I feel better?",
        ],
        "system": ["", "You are terse.", ""],
        "answer": [
            "Drink water and rest.",
            "4",
            "Sleep a lot, eat well, and call a doctor if it persists.",
        ],
    }
)

# Capture and interventions leave a model as they found it (see test_interventions.py), so
# read-only tests share one tiny model per layout; tests that edit one build their own.
_tiny = functools.cache(make_tiny_lm)


def _hand_means(lm, table):
    """Per answer, per position: [n_layers, d] means from unbatched output_hidden_states."""
    out = {"answer": [], "prompt": [], "last": []}
    final_norm = lm.view.base.model.norm
    for enc in encode(lm, table):
        with torch.no_grad():
            hs = lm.model(torch.tensor([enc.ids]), output_hidden_states=True).hidden_states
        n = len(enc.ids)
        spans = {"answer": (enc.n_prompt, n), "prompt": (0, enc.n_prompt), "last": (n - 1, n)}
        for pos, (lo, hi) in spans.items():
            # hidden_states[i + 1] is block i's output, except the last entry, which HF returns
            # after the final norm: layers 0..n-2 are compared here, the last layer below.
            out[pos].append(
                torch.stack([hs[i + 1][0, lo:hi].mean(0) for i in range(lm.view.n_layers - 1)])
            )
        out.setdefault("final", []).append((final_norm, hs[-1][0, -1]))
    return out


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_capture_equals_hidden_states(arch):
    lm = _tiny(arch)
    got = capture(lm, TABLE, ("answer", "prompt", "last"), batch_size=2)
    hand = _hand_means(lm, TABLE)
    n_layers = lm.view.n_layers
    for pos in ("answer", "prompt", "last"):
        acts = got[pos]
        assert acts.values.shape == (3, n_layers, lm.view.d_model)
        assert acts.values.dtype == torch.float32
        assert acts.answer_ids == list(TABLE["answer_id"])
        for a in range(3):
            torch.testing.assert_close(
                acts.values[a, : n_layers - 1], hand[pos][a], rtol=1e-4, atol=1e-4
            )
    # The last layer is the raw block output: the final norm of its last token is HF's last state.
    for a, (norm, expected) in enumerate(hand["final"]):
        with torch.no_grad():
            normed = norm(got["last"].values[a, -1][None, None])[0, 0]
        torch.testing.assert_close(normed, expected, rtol=1e-4, atol=1e-4)


def test_answer_span_is_exact():
    lm = _tiny("llama")
    for enc, row in zip(encode(lm, TABLE), TABLE.itertuples()):
        messages = ([{"role": "system", "content": row.system}] if row.system else []) + [
            {"role": "user", "content": row.question}
        ]
        prompt_ids = lm.tokenizer(render_chat(lm.tokenizer, messages), add_special_tokens=False)[
            "input_ids"
        ]
        answer_ids = lm.tokenizer(row.answer, add_special_tokens=False)["input_ids"]
        assert enc.ids == list(prompt_ids) + list(answer_ids)
        assert enc.n_prompt == len(prompt_ids)
        assert lm.tokenizer.decode(enc.ids[enc.n_prompt :]) == row.answer


def test_batching_does_not_change_means():
    lm = _tiny("qwen2")
    one = capture_activations(lm, TABLE, batch_size=1)
    three = capture_activations(lm, TABLE, batch_size=3)
    torch.testing.assert_close(one.values, three.values, rtol=1e-5, atol=1e-5)
    assert one.n_tokens == [e.n_answer for e in encode(lm, TABLE)]


def test_capture_records_provenance_and_round_trips(tmp_path):
    lm = _tiny("llama")
    acts = capture_activations(lm, TABLE, "prompt")
    assert acts.layer_convention == LAYER_CONVENTION and acts.model == "tiny-llama"
    acts.save(tmp_path / "a.safetensors")
    back = Activations.load(tmp_path / "a.safetensors")
    assert torch.equal(back.values, acts.values)
    assert back.answer_ids == acts.answer_ids and back.position == "prompt"
    assert back.layer_convention == LAYER_CONVENTION


def test_judged_csv_schema_is_accepted():
    csv_like = TABLE.drop(columns=["answer_id", "system"]).rename(columns={"answer": "response"})
    norm = table_columns(csv_like)
    assert list(norm["answer_id"]) == ["0", "1", "2"] and list(norm["system"]) == ["", "", ""]
    assert list(norm["answer"]) == list(TABLE["answer"])


def test_empty_answer_is_a_clear_error():
    lm = _tiny("llama")
    table = TABLE.assign(answer=["fine", "", "ok"])
    with pytest.raises(DataError, match=r"q2/0/0"):
        capture_activations(lm, table)
    # Prompt and last positions are defined without an answer.
    last = capture_activations(lm, table, "last")
    assert torch.isfinite(last.values).all()


def test_bad_positions_and_columns():
    lm = _tiny("llama")
    with pytest.raises(ConfigError, match="answer, prompt, last"):
        capture(lm, TABLE, ("middle",))
    with pytest.raises(DataError, match="'question'"):
        capture(lm, TABLE.drop(columns=["question"]))


def test_capture_sees_interventions_and_adapters():
    from peft import LoraConfig, get_peft_model

    from misdirection.directions import DirectionSet
    from misdirection.interventions import Ablate
    from misdirection.models import LoadedModel

    lm = make_tiny_lm("llama")
    base = capture_activations(lm, TABLE)
    torch.manual_seed(3)
    ds = DirectionSet(torch.randn(lm.view.n_layers, lm.view.d_model))
    ablated = capture_activations(lm, TABLE, intervention=Ablate(ds))
    units = ds.unit()
    # Means of vectors orthogonal to u are orthogonal to u.
    proj = torch.einsum("ald,ld->al", ablated.values, units).abs()
    assert proj.max() < 1e-4 * ablated.values.norm(dim=-1).max()
    assert ablated.intervention and '"kind": "ablate"' in ablated.intervention
    # A LoRA adapter with non-zero B changes what is captured, and matches its own hidden states.
    cfg = LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False)
    peft_lm = LoadedModel(get_peft_model(lm.model, cfg).eval(), lm.tokenizer, "tiny-llama", "lora")
    adapted = capture_activations(peft_lm, TABLE)
    assert (adapted.values - base.values).abs().max() > 1e-3
    enc = encode(peft_lm, TABLE)[0]
    with torch.no_grad():
        hs = peft_lm.model(
            input_ids=torch.tensor([enc.ids]), output_hidden_states=True
        ).hidden_states
    torch.testing.assert_close(
        adapted.values[0, 0], hs[1][0, enc.n_prompt :].mean(0), rtol=1e-4, atol=1e-4
    )
