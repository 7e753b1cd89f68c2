"""What the benchmarks share: the model to measure and the dtypes to compare.

``--model`` takes what :func:`misdirection.models.load_model` takes, or the name of a randomly
initialised shape (no download; the embedded model's tokenizer): ``random-7b`` is Llama-2-7B's
body (32 layers, width 4096, MLP 11008, 32 heads) with the embedded tokenizer's 49,152-token
vocabulary, for GPUs (``--device cuda``: about 27 GB of weights in fp32 and 13 GB in bf16, both
held when the two are compared; the training benchmark adds a second copy of each); ``random-tiny`` is a 4-layer width-64 model that checks the path
on any machine. Random weights time the arithmetic of a real model of that shape; their answers
are noise, so only speed is read from them.

``--dtypes`` lists the dtypes to compare, each a name :func:`misdirection.models.resolve_dtype`
reads (``auto`` included); every benchmark alternates them within one run and prints ratios
against the first.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

RANDOM_SHAPES: dict[str, dict[str, int]] = {
    "random-7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
    ),
    "random-tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}


def add_model_args(parser: argparse.ArgumentParser, dtypes: str = "float32,bfloat16") -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help=f"a model spec, or a random shape: {', '.join(RANDOM_SHAPES)}",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--dtypes",
        type=dtype_list,
        default=dtype_list(dtypes),
        help=f"comma-separated dtypes to compare, ratios against the first (default {dtypes})",
    )


def dtype_list(text: str) -> list[str]:
    from misdirection.errors import ConfigError
    from misdirection.models import resolve_dtype

    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        for name in names:
            resolve_dtype(name, "cpu")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not names:
        raise argparse.ArgumentTypeError("name at least one dtype, e.g. float32,bfloat16")
    return names


def load_models(spec: str, device: str, dtypes: list[str], seed: int = 0) -> dict[str, Any]:
    """``{dtype name: LoadedModel}``, the same weights in each dtype (``auto`` resolved)."""
    from misdirection.models import dtype_name, load_model, resolve_dtype

    resolved = {dtype_name(resolve_dtype(d, device)): d for d in dtypes}
    if spec not in RANDOM_SHAPES:
        return {name: load_model(spec, device=device, dtype=name) for name in resolved}
    return _random_models(spec, device, list(resolved), seed)


def _random_models(spec: str, device: str, names: list[str], seed: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from misdirection.models import LoadedModel, embedded_model_path, prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(embedded_model_path()))
    config = LlamaConfig(
        **RANDOM_SHAPES[spec],
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    models = {}
    for name in names:
        # Built on the device itself, in its dtype (initialising 7B weights on a CPU takes minutes,
        # and a cast copy would hold both dtypes at once). The same seed in each dtype: weights of
        # the same distribution, which is all that timing needs.
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, name))
        models[name] = LoadedModel(model=model.eval(), tokenizer=tokenizer, spec=spec)
    return models


def synchronizer(device: torch.device) -> Any:
    """A function that waits for the device's queued work (timing GPU work needs it)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
