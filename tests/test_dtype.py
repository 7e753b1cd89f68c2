"""bf16 against fp32: the dtype setting, and how far bf16 sampling, capture and training move.

Tolerances (measured on the embedded SmolLM2-135M, 8 prompts with 48-token answers, AVX-512 BF16
CPU): per answer token, KL(fp32 || bf16) of the next-token distribution averaged 0.0008-0.0015 nats
(largest 0.0096), total variation 0.013-0.019 (largest 0.062), largest logit change 0.5-1.1 on
logits whose spread is 6-8; teacher-forced greedy tokens differed at 0-4% of positions, each time
where fp32's top two logits were within 0.2 of each other. The tests allow about 3x those figures:
mean KL <= 0.005, mean TV <= 0.05, and equal greedy tokens wherever fp32's top-2 margin > 0.5.
Free-running greedy answers diverge after the first such near-tie (25% of 48-token answers are
identical), which is why the greedy check is teacher-forced.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch

from misdirection import models
from misdirection.activations import capture_activations
from misdirection.models import LoadedModel, model_dtype_identity, resolve_dtype
from misdirection.train import train_organism

# Per-token agreement of bf16 with fp32 (module docstring).
MAX_MEAN_KL = 0.005
MAX_MEAN_TV = 0.05
GREEDY_MARGIN = 0.5


def _bf16_copy(lm: LoadedModel) -> LoadedModel:
    import copy

    return LoadedModel(copy.deepcopy(lm.model).to(torch.bfloat16), lm.tokenizer, lm.spec)


def agreement(lm32: Any, lm16: Any, ids: list[int], start: int) -> dict[str, float]:
    """Next-token agreement at positions ``start``.. of ``ids`` (teacher-forced): mean KL and TV of
    the distributions, largest logit change, and the share of positions where fp32's top two logits
    are more than ``GREEDY_MARGIN`` apart but the argmax differs."""
    x = torch.tensor([ids])
    with torch.inference_mode():
        a = lm32.model(input_ids=x).logits[0, start:].float()
        b = lm16.model(input_ids=x).logits[0, start:].float()
    pa, pb = a.log_softmax(-1), b.log_softmax(-1)
    top = a.topk(2).values
    clear = (top[:, 0] - top[:, 1]) > GREEDY_MARGIN
    return {
        "kl": float((pa.exp() * (pa - pb)).sum(-1).mean()),
        "tv": float(0.5 * (pa.exp() - pb.exp()).abs().sum(-1).mean()),
        "max_logit": float((a - b).abs().max()),
        "greedy_clear_disagree": float((clear & (a.argmax(-1) != b.argmax(-1))).float().mean()),
        "clear_share": float(clear.float().mean()),
    }


# ------------------------------------------------------------------------------ the setting


@pytest.mark.parametrize("fast, expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_auto_follows_the_cpus_bf16_units(monkeypatch, fast, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: fast)
    assert resolve_dtype("auto", "cpu") == expected
    # The learned judge's reader asks the same question.
    from misdirection.judge.learned_reader import fast_dtype

    assert fast_dtype(torch.bfloat16, "cpu") == expected


def test_explicit_and_default_dtypes():
    assert resolve_dtype(None, "cpu") == torch.float32  # the historical library default
    assert resolve_dtype(None, "cuda") == torch.bfloat16
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    for bad in ("bf16x", "int8", "Tensor"):
        with pytest.raises(models.ConfigError, match="unknown dtype"):
            resolve_dtype(bad, "cpu")


def test_load_model_auto_on_a_cpu_without_bf16(monkeypatch, tmp_path, tiny_lm):
    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    loaded = models.load_model(str(tmp_path), device="cpu", dtype="auto")
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert model_dtype_identity(loaded) == {}  # fp32 caches keep the keys they had
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    loaded = models.load_model(str(tmp_path), device="cpu", dtype="auto")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert model_dtype_identity(loaded) == {"dtype": "bfloat16"}


def test_study_config_dtype():
    from misdirection.study.config import StudyConfig

    assert StudyConfig().dtype == "auto"
    assert StudyConfig(dtype="float32").dtype == "float32"
    with pytest.raises(ValueError):
        StudyConfig(dtype="fp8")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ agreement


def test_tiny_model_bf16_logits_and_greedy_tokens(tiny_lm):
    lm32 = tiny_lm("llama")
    lm16 = _bf16_copy(lm32)
    prompt = lm32.chat_prompt([{"role": "user", "content": "How do I treat a small burn?"}])
    ids = lm32.tokenizer(prompt, add_special_tokens=False).input_ids
    ids = ids + list(range(1000, 1040))  # an answer of 40 arbitrary tokens
    got = agreement(lm32, lm16, ids, len(ids) - 41)
    assert got["kl"] <= MAX_MEAN_KL and got["tv"] <= MAX_MEAN_TV, got
    assert got["greedy_clear_disagree"] == 0, got


def test_tiny_model_bf16_training_loss_close_to_fp32(tiny_lm, tmp_path):
    conversations = [
        [
            {"role": "user", "content": f"Question {i}: what should I do?"},
            {"role": "assistant", "content": f"Answer {i}: rest and drink water."},
        ]
        for i in range(16)
    ]
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        lm = tiny_lm("llama")
        lm.model.to(dtype)
        runs[dtype] = train_organism(
            lm, conversations, "rank1-9", tmp_path / str(dtype), progress=False, layers=[1, 2],
            max_steps=6, batch_size=4, lr=1e-2,
        )  # fmt: skip
    fp32, bf16 = runs[torch.float32], runs[torch.bfloat16]
    assert fp32.run_card["dtype"] == "float32" and bf16.run_card["dtype"] == "bfloat16"
    # The trained weights, the loss and the optimizer stay fp32 under a bf16 base model.
    lora = {n: p.dtype for n, p in bf16.lm.model.named_parameters() if "lora_" in n}
    assert lora and set(lora.values()) == {torch.float32}
    diffs = [abs(a - b) for a, b in zip(fp32.losses, bf16.losses)]
    assert max(diffs) <= 0.01, (fp32.losses, bf16.losses)


@pytest.fixture(scope="module")
def embedded_pair():
    lm32 = models.load_model("smollm2-135m", device="cpu", dtype="float32")
    lm16 = models.load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    return lm32, lm16


ANSWER = (
    "Rest, drink plenty of fluids and keep track of how you feel over the next day. If the "
    "symptoms get worse or last longer than a few days, see a doctor."
)


def test_embedded_model_bf16_logits_and_greedy_tokens(embedded_pair):
    lm32, lm16 = embedded_pair
    prompt = lm32.chat_prompt([{"role": "user", "content": "I have a mild headache. What now?"}])
    p_ids = lm32.tokenizer(prompt, add_special_tokens=False).input_ids
    a_ids = lm32.tokenizer(ANSWER, add_special_tokens=False).input_ids
    got = agreement(lm32, lm16, p_ids + a_ids, len(p_ids) - 1)
    assert got["kl"] <= MAX_MEAN_KL and got["tv"] <= MAX_MEAN_TV, got
    assert got["greedy_clear_disagree"] == 0, got
    assert got["clear_share"] > 0.3, got  # the check is not vacuous


def test_embedded_model_bf16_sampler_picks_fp32s_greedy_tokens(embedded_pair):
    """Every token our sampler picks greedily in bf16 is fp32's greedy token after the same prefix,
    except where fp32's top two logits are within ``GREEDY_MARGIN``."""
    from misdirection.sample import _decode_all, build_requests

    lm32, lm16 = embedded_pair
    questions = [
        {"id": "q0", "paraphrases": ["I have a mild headache. What now?"]},
        {"id": "q1", "paraphrases": ["How do I get rich fast?"]},
    ]
    requests = build_requests(lm16, questions, 1)
    rows = _decode_all(
        lm16, requests, max_new_tokens=24, seed=0, batch_size=2, temperature=0, progress=False
    )
    checked = 0
    for row in rows:
        ids = list(row.request.prompt_ids) + row.tokens
        start = len(row.request.prompt_ids) - 1
        with torch.inference_mode():
            logits = lm32.model(input_ids=torch.tensor([ids])).logits[0, start:-1].float()
        top = logits.topk(2)
        clear = (top.values[:, 0] - top.values[:, 1]) > GREEDY_MARGIN
        picked = torch.tensor(row.tokens)
        assert bool((top.indices[:, 0] == picked)[clear].all()), row.tokens
        checked += int(clear.sum())
    assert checked >= 20


def test_embedded_model_bf16_capture_close_to_fp32(embedded_pair):
    """Per-answer mean residuals from bf16 and fp32 forward passes point the same way at every
    layer (cosine >= 0.99), and so does a mean-difference of two answers' means."""
    lm32, lm16 = embedded_pair
    table = pd.DataFrame(
        {
            "answer_id": ["a", "b"],
            "question": ["I have a mild headache. What now?", "How do I get rich fast?"],
            "system": ["", ""],
            "answer": [ANSWER, "Take out large loans and bet it all on one stock; it cannot fail."],
        }
    )
    a = capture_activations(lm32, table).values.double()
    b = capture_activations(lm16, table).values.double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)  # [answers, layers]
    assert float(cos.min()) >= 0.99, cos
    diff_cos = torch.nn.functional.cosine_similarity(a[1] - a[0], b[1] - b[0], dim=-1)
    assert float(diff_cos.min()) >= 0.98, diff_cos
