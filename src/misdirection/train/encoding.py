"""Tokenisation with an assistant-only loss mask, and length-bucketed seeded batches."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from misdirection.batching import right_pad
from misdirection.models import render_chat
from misdirection.train.recipes import Recipe

IGNORE_INDEX = -100


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(
    tokenizer: Any, messages: Sequence[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and return (text, character spans of each assistant turn).

    A span runs from the end of the prompt that precedes the turn (rendered with the generation
    prompt) to the end of the conversation rendered through that turn, so it includes the template's
    end-of-turn marker (the model must learn to stop). Spans are found by longest common prefix with
    the full rendering, which stays correct for templates that re-render earlier turns.
    """
    messages = list(messages)
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:k], add_generation_prompt=True)
        through = render_chat(tokenizer, messages[: k + 1], add_generation_prompt=False)
        start, end = _common_prefix(prompt, full), _common_prefix(through, full)
        if end > start:
            spans.append((start, end))
    return full, spans


@dataclass
class Example:
    """One tokenised conversation: ids and labels (-100 outside assistant turns)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_target(self) -> int:
        # Targets are predicted from the previous position, so the first token never counts.
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def encode_conversation(
    tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int
) -> Example:
    """Tokenise a conversation; labels keep the ids of assistant tokens only."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for j, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(s <= start < e for s, e in spans):
            labels[j] = ids[j]
    truncated = len(ids) > max_length
    return Example(ids[:max_length], labels[:max_length], truncated)


def encode_dataset(
    tokenizer: Any, rows: Sequence[Sequence[dict[str, str]]], max_length: int
) -> list[Example]:
    return [encode_conversation(tokenizer, row, max_length) for row in rows]


# --------------------------------------------------------------------------------------------------
# Batching


@dataclass
class Batch:
    """Right-padded tensors of one micro-batch."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    indices: list[int]

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def n_target(self) -> int:
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.indices,
        )


def collate(examples: Sequence[Example], indices: Sequence[int], pad_id: int) -> Batch:
    ids, mask = right_pad([e.input_ids for e in examples], pad_id)
    labels, _ = right_pad([e.labels for e in examples], IGNORE_INDEX)
    return Batch(ids, mask, labels, list(indices))


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, chunk_batches: int = 16
) -> list[list[int]]:
    """Seeded batches of one epoch, bucketed by length.

    Shuffle, cut into chunks of ``chunk_batches`` batches, sort each chunk by length (little padding),
    then shuffle the batch order (no long-to-short curriculum). Depends only on (seed, epoch).
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches: list[list[int]] = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c : c + chunk], key=lambda i: lengths[i])
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def step_plan(lengths: Sequence[int], recipe: Recipe) -> list[list[list[int]]]:
    """All optimizer steps of a run: each a list of micro-batches (lists of example indices)."""
    per_epoch = math.ceil(math.ceil(len(lengths) / recipe.batch_size) / recipe.grad_accum)
    total = recipe.total_steps(math.ceil(len(lengths) / recipe.batch_size))
    steps: list[list[list[int]]] = []
    epoch = 0
    while len(steps) < total:
        batches = epoch_batches(lengths, recipe.batch_size, recipe.seed, epoch)
        for s in range(per_epoch):
            steps.append(batches[s * recipe.grad_accum : (s + 1) * recipe.grad_accum])
        epoch += 1
    return steps[:total]
