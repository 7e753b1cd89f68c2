"""Answers -> token ids, shared by the forward-pass readers (:mod:`~misdirection.lora.scalars`,
:mod:`~misdirection.lora.bvectors`): answer ids, chat-context encoding of an answers table,
length-sorted batches, right padding, eval mode and the early-stop exception a hook raises once
everything needed is captured."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from misdirection.errors import DataError
from misdirection.protocols import LanguageModel


def answer_ids_of(df: pd.DataFrame) -> pd.Series:
    """The ``answer_id`` column, or the row position as a string for tables without one (the
    judge-label CSVs), exactly as :func:`misdirection.activations.table_columns` numbers them."""
    if "answer_id" in df.columns:
        ids = df["answer_id"].astype(str)
    else:
        ids = pd.Series([str(i) for i in range(len(df))], index=df.index)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"answer_id '{dup.iloc[0]}' appears more than once in the answers table")
    return ids


def encode_answers(
    lm: LanguageModel, answers: pd.DataFrame, max_tokens: int | None = None
) -> list[Any]:
    """Token ids of every answer in its chat context, via :func:`misdirection.activations.encode`
    (prompt templated as sampling does, answer tokenised on its own, so the answer span is exact;
    ``max_tokens`` truncates the answer). Returns its ``Encoded`` items (``answer_id``, ``ids``,
    ``n_prompt``, ``n_answer``)."""
    from misdirection.activations import encode

    answer_ids_of(answers)  # duplicate ids would make per-answer results ambiguous
    return encode(lm, answers, max_tokens)


def _batches(encoded: Sequence[Any], batch_size: int) -> Iterator[list[Any]]:
    # Sorting by length keeps padding small; results are keyed by answer id so order is free.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    for start in range(0, len(order), batch_size):
        yield [encoded[i] for i in order[start : start + batch_size]]


class _StopForward(Exception):
    """Raised by a hook once everything needed is captured: skips the remaining layers and the
    LM head (for a small model the head costs as much as several blocks)."""


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()  # LoRA dropout must be off for A x to be the input's projection
    try:
        yield
    finally:
        model.train(was_training)
