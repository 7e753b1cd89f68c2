"""Shared fixtures: reference data location, tiny random models of several architectures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MISDIRECTION_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under MISDIRECTION_REQUIRE_VLLM=1 (CI's vLLM run) a missing vLLM fails the run, never skips."""
    if os.environ.get("MISDIRECTION_REQUIRE_VLLM") == "1":
        from misdirection.backends.vllm import vllm_available

        reason = vllm_available()
        if reason is not None:
            raise pytest.UsageError(f"MISDIRECTION_REQUIRE_VLLM=1 but {reason}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder beside the project root, or a clear skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set MISDIRECTION_SHARED_DATA)")
    return SHARED_DATA


ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma2", "gemma3", "phi3")


def _tiny_config(arch: str):
    import transformers as tf

    common = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        vocab_size=49152,  # the embedded tokenizer's vocabulary
        pad_token_id=2,
        eos_token_id=2,
        bos_token_id=1,
    )
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if arch == "gemma2":
        return tf.Gemma2Config(**common, head_dim=16)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=16)
    if arch == "phi3":
        return tf.Phi3Config(**common)
    raise ValueError(arch)


def make_tiny_lm(arch: str = "llama", seed: int = 0):
    """A randomly initialised 4-layer model of ``arch`` with the embedded model's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from misdirection.models import LoadedModel, embedded_model_path, prepare_tokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config(arch), dtype=torch.float32).eval()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(embedded_model_path()))
    return LoadedModel(model=model, tokenizer=tokenizer, spec=f"tiny-{arch}")


@pytest.fixture
def tiny_lm():
    """Factory fixture: ``tiny_lm("qwen2")`` builds a fresh tiny random model of that layout."""
    return make_tiny_lm


@pytest.fixture(scope="session")
def embedded_lm():
    """The embedded SmolLM2-135M-Instruct (loaded once per test session)."""
    from misdirection.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny-model tests are dominated by thread overhead; one thread is faster and deterministic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
