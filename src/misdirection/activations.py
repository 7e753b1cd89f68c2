"""Residual-stream activations of answers, averaged per answer, all layers from one forward pass.

Layer convention: :data:`misdirection.models.LAYER_CONVENTION` — layer ``i`` is the output of
decoder block ``i`` (0-based), ``hidden_states[i + 1]`` in Hugging Face terms. It is recorded in
every :class:`Activations` and in every file written from one. One caveat: Hugging Face returns its
*last* hidden state after the model's final norm, while our last layer is the raw output of the last
block, like every other layer.

Each answer is rebuilt exactly as sampling produced it: the chat-templated prompt (system turn if
any, then the user question, then the generation prompt) tokenised without extra special tokens,
followed by the answer text tokenised on its own. The answer span is therefore known by
construction, never searched for. Token positions averaged over:

* ``answer``: the answer's tokens (an empty answer is an error here);
* ``prompt``: the prompt's tokens (template included);
* ``last``: the final token of prompt + answer (the last prompt token when the answer is empty).

Memory stays bounded: hooks at every ``blocks.{L}.hook_resid_post`` (:mod:`misdirection.hooks`,
the hook points interventions use too) reduce each layer's [batch, tokens, d] residual to
[batch, d] means as the forward pass runs; per-token activations are never kept.
Batches are right-padded with an attention mask (a causal model's real tokens never attend to the
padding after them) and formed from length-sorted answers to waste little compute on padding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from misdirection.batching import pad_id, right_pad
from misdirection.errors import ConfigError, DataError
from misdirection.hooks import resid_post, residual_hooks
from misdirection.io import atomic_path
from misdirection.models import LAYER_CONVENTION, render_chat
from misdirection.protocols import Intervention, LanguageModel

POSITIONS = ("answer", "prompt", "last")
ACTIVATIONS_FORMAT = "misdirection.activations/1"


@dataclass
class Encoded:
    """One answer as token ids: ``ids[:n_prompt]`` is the prompt, the rest the answer."""

    answer_id: str
    ids: list[int]
    n_prompt: int

    @property
    def n_answer(self) -> int:
        return len(self.ids) - self.n_prompt


@dataclass
class Activations:
    """Per-answer mean residuals: ``values[a, i]`` = mean over answer ``a``'s tokens at layer ``i``."""

    values: torch.Tensor  # float32 [n_answers, n_layers, d_model]
    answer_ids: list[str]
    position: str
    model: str = ""
    adapter: str = ""
    intervention: str = ""
    n_tokens: list[int] = field(default_factory=list)
    layer_convention: str = LAYER_CONVENTION

    @property
    def n_layers(self) -> int:
        return int(self.values.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.values.shape[2])

    def mean(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Mean over answers (all, or the given row indices): [n_layers, d_model], float64 sum."""
        vals = self.values if rows is None else self.values[list(rows)]
        return vals.double().mean(0).float()

    def save(self, path: str | Path) -> None:
        """Write a safetensors file (tensor ``activations``; ids and provenance as metadata)."""
        import json

        from safetensors.torch import save_file

        meta = {
            "format": ACTIVATIONS_FORMAT,
            "positions": self.position,
            "model": self.model,
            "adapter": self.adapter,
            "intervention": self.intervention,
            "layer_convention": self.layer_convention,
            "answer_ids": json.dumps(self.answer_ids),
            "n_tokens": json.dumps(self.n_tokens),
        }
        with atomic_path(path) as tmp:  # a cache file that exists is a whole one
            save_file({"activations": self.values.contiguous()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != ACTIVATIONS_FORMAT:
                raise DataError(f"{path}: not an activations file (format {meta.get('format')!r})")
            values = f.get_tensor("activations")
        return cls(
            values=values,
            answer_ids=json.loads(meta["answer_ids"]),
            position=meta["positions"],
            model=meta.get("model", ""),
            adapter=meta.get("adapter", ""),
            intervention=meta.get("intervention", ""),
            n_tokens=json.loads(meta.get("n_tokens", "[]")),
            layer_convention=meta.get("layer_convention", LAYER_CONVENTION),
        )


# ----------------------------------------------------------------------------------------------
# Tables and tokens


def table_columns(table: pd.DataFrame, where: str = "answers table") -> pd.DataFrame:
    """Normalise an answers table to columns ``answer_id, question, system, answer`` (str).

    Accepts our schema (``answer``) and the field's judged CSV files (``response``, no ids: the row
    number becomes the id).
    """
    cols = set(table.columns)
    answer_col = "answer" if "answer" in cols else "response" if "response" in cols else None
    if answer_col is None or "question" not in cols:
        raise DataError(
            f"{where} needs columns 'question' and 'answer' (or 'response'); it has {sorted(cols)}"
        )
    ids = (
        table["answer_id"].astype(str)
        if "answer_id" in cols
        else pd.Series([str(i) for i in range(len(table))], index=table.index)
    )
    system = (
        table["system"] if "system" in cols else pd.Series([""] * len(table), index=table.index)
    )
    return pd.DataFrame(
        {
            "answer_id": ids.to_numpy(),
            "question": table["question"].fillna("").astype(str).to_numpy(),
            "system": system.fillna("").astype(str).to_numpy(),
            "answer": table[answer_col].fillna("").astype(str).to_numpy(),
        }
    )


def prompt_messages(question: str, system: str = "") -> list[dict[str, str]]:
    """The chat turns of a question: a system turn only when ``system`` is non-empty."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]


def encode(lm: LanguageModel, table: pd.DataFrame, max_tokens: int | None = None) -> list[Encoded]:
    """Token ids of prompt + answer for every row; the answer span is exact by construction.

    ``max_tokens`` truncates the *answer* (never the prompt) to that many tokens.
    """
    rows = table_columns(table)
    tok = lm.tokenizer
    prompt_cache: dict[tuple[str, str], list[int]] = {}
    out: list[Encoded] = []
    for aid, question, system, answer in rows.itertuples(index=False, name=None):
        key = (question, system)
        if key not in prompt_cache:
            text = render_chat(tok, prompt_messages(question, system))
            # The template holds any BOS token already; adding special tokens would double it.
            prompt_cache[key] = list(tok(text, add_special_tokens=False)["input_ids"])
        answer_ids = list(tok(answer, add_special_tokens=False)["input_ids"]) if answer else []
        if max_tokens is not None:
            answer_ids = answer_ids[:max_tokens]
        out.append(Encoded(aid, prompt_cache[key] + answer_ids, len(prompt_cache[key])))
    return out


def _position_weights(
    batch: Sequence[Encoded], positions: Sequence[str], width: int
) -> torch.Tensor:
    """[batch, n_positions, width] float32 averaging weights (rows sum to 1), right-padded."""
    w = torch.zeros(len(batch), len(positions), width)
    for b, enc in enumerate(batch):
        n = len(enc.ids)
        for p, pos in enumerate(positions):
            if pos == "answer":
                lo, hi = enc.n_prompt, n
            elif pos == "prompt":
                lo, hi = 0, enc.n_prompt
            else:  # last
                lo, hi = n - 1, n
            w[b, p, lo:hi] = 1.0 / (hi - lo)
    return w


def _check_positions(positions: Sequence[str]) -> list[str]:
    positions = [positions] if isinstance(positions, str) else list(positions)
    bad = [p for p in positions if p not in POSITIONS]
    if bad or not positions:
        raise ConfigError(f"token positions must be among {', '.join(POSITIONS)}; got {positions}")
    return positions


# ----------------------------------------------------------------------------------------------
# Capture


@torch.no_grad()
def capture(
    lm: LanguageModel,
    table: pd.DataFrame,
    positions: str | Sequence[str] = ("answer",),
    *,
    batch_size: int = 8,
    intervention: Intervention | None = None,
    max_tokens: int | None = None,
    progress: bool = False,
) -> dict[str, Activations]:
    """Mean residual per answer at every layer, for each requested token position, in one pass.

    Adapters of ``lm`` are active as loaded. ``intervention`` (anything with ``apply(model)`` and
    ``spec()``, e.g. :class:`misdirection.interventions.Ablate`) is applied around the forward
    passes; its hooks come before ours, so the captured residual is the intervened one.
    """
    import json

    positions = _check_positions(positions)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    encoded = encode(lm, table, max_tokens)
    if "answer" in positions:
        empty = [e.answer_id for e in encoded if e.n_answer == 0]
        if empty:
            listed = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
            raise DataError(
                f"{len(empty)} answer(s) have no tokens, so their answer-token mean is undefined "
                f"(answer_id {listed}); drop them or use positions 'prompt'/'last'"
            )
    view = lm.view
    n, n_layers, d = len(encoded), view.n_layers, view.d_model
    result = torch.zeros(len(positions), n, n_layers, d, dtype=torch.float32)
    device = lm.device
    pad = pad_id(lm.tokenizer)
    order = sorted(range(n), key=lambda i: len(encoded[i].ids), reverse=True)
    spec = json.dumps(intervention.spec(), sort_keys=True) if intervention is not None else ""

    current: dict[str, torch.Tensor] = {}
    acc: list[torch.Tensor | None] = [None] * n_layers

    def make_hook(layer: int):
        def hook(h: torch.Tensor) -> None:
            # [B, P, T] @ [B, T, d] -> [B, P, d]: one reduction per layer, in float32.
            acc[layer] = torch.bmm(current["w"], h.float())

        return hook

    context = intervention.apply(lm.model) if intervention is not None else contextlib.nullcontext()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    bar = _progress(len(batches), progress)
    with context, residual_hooks(view, {resid_post(i): make_hook(i) for i in range(n_layers)}):
        for idx in batches:
            batch = [encoded[i] for i in idx]
            ids, mask = right_pad([e.ids for e in batch], pad)
            width = ids.shape[1]
            current["w"] = _position_weights(batch, positions, width).to(device)
            _forward(lm.model, ids.to(device), mask.to(device))
            stacked = torch.stack([a for a in acc], dim=2).cpu()  # type: ignore[misc]  # [B, P, L, d]
            result[:, idx] = stacked.permute(1, 0, 2, 3)
            bar.update(1)
    bar.close()
    aids = [e.answer_id for e in encoded]
    counts = {
        "answer": [e.n_answer for e in encoded],
        "prompt": [e.n_prompt for e in encoded],
        "last": [1] * n,
    }
    return {
        pos: Activations(
            values=result[p],
            answer_ids=aids,
            position=pos,
            model=lm.spec,
            adapter=lm.adapter_spec,
            intervention=spec,
            n_tokens=counts[pos],
        )
        for p, pos in enumerate(positions)
    }


def capture_activations(
    lm: LanguageModel, table: pd.DataFrame, position: str = "answer", **kwargs: Any
) -> Activations:
    """:func:`capture` for a single token position."""
    return capture(lm, table, (position,), **kwargs)[position]


def _forward(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> None:
    # logits_to_keep=1: the [B, T, vocab] logits are not needed and cost as much as a few blocks.
    try:
        model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
    except TypeError:  # models without logits_to_keep
        model(input_ids=ids, attention_mask=mask, use_cache=False)


class _NoBar:
    def update(self, _n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="capture", unit="batch")
