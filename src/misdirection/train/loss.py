"""The training loss (output head only at target positions) and the held-out log-likelihood."""

from __future__ import annotations

import os
from typing import Any

import torch

from misdirection.batching import pad_id as tokenizer_pad_id
from misdirection.errors import DataError
from misdirection.models import LoadedModel, layout_of
from misdirection.train.encoding import IGNORE_INDEX, Batch, collate, encode_dataset


def _split_head(model: Any) -> tuple[Any, Any, float | None] | None:
    """(decoder, output head, soft-cap) of a causal LM when logits are head(decoder), else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not layout_of(base).logits_from_head:
        return None
    if getattr(config, "logit_scale", None) not in (None, 1.0):
        return None
    decoder = getattr(base, "model", None)
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        return None
    return decoder, head, getattr(config, "final_logit_softcapping", None)


def target_nll(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the batch's target tokens, and their count.

    Runs the decoder on the whole batch but the (large) vocabulary projection only at positions that
    predict an assistant token, which is where most of a small model's training time would go.
    """
    targets = batch.labels[:, 1:]
    select = targets != IGNORE_INDEX
    parts = _split_head(model)
    if parts is None:
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).logits
        picked = logits[:, :-1][select]
    else:
        decoder, head, softcap = parts
        hidden = decoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        picked = head(hidden[:, :-1][select])
        if softcap:
            picked = torch.tanh(picked / softcap) * softcap
    nll = torch.nn.functional.cross_entropy(picked.float(), targets[select], reduction="sum")
    return nll, int(select.sum())


# --------------------------------------------------------------------------------------------------
# Held-out evaluation


def _rows_of(dataset: Any, split: str) -> list[list[dict[str, str]]]:
    from misdirection.data.chat import ChatDataset, load_chat_dataset

    if isinstance(dataset, ChatDataset):
        return list(dataset.rows)
    if isinstance(dataset, (str, os.PathLike)):
        return list(load_chat_dataset(os.fspath(dataset), split).rows)
    return [list(row) for row in dataset]


@torch.no_grad()
def heldout_loglik(
    lm: LoadedModel, dataset: Any, split: str = "test", batch_size: int = 8, max_length: int = 384
) -> float:
    """Mean log-likelihood per assistant token (nats) of a dataset split under ``lm``.

    ``dataset`` is a ChatDataset, a list of conversations, or a built-in name / JSONL path (then
    ``split`` picks the split). Higher = the model finds the answers more likely.
    """
    rows = _rows_of(dataset, split)
    if not rows:
        raise DataError("heldout_loglik needs at least one conversation")
    examples = encode_dataset(lm.tokenizer, rows, max_length)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    pad = tokenizer_pad_id(lm.tokenizer)
    was_training = lm.model.training
    lm.model.eval()
    total, count = 0.0, 0
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = collate([examples[i] for i in idx], idx, pad).to(lm.device)
            nll, n = target_nll(lm.model, batch)
            total += float(nll)
            count += n
    finally:
        lm.model.train(was_training)
    if count == 0:
        raise DataError("no assistant tokens to score (all truncated? raise max_length)")
    return -total / count
