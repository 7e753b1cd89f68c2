"""Padding token-id lists into one batch: the pad id rule and right/left padding with a mask.

Right padding is what every teacher-forced forward pass uses: real tokens keep positions
``0..n-1`` and never attend to the padding (causal attention plus the mask), so a batched result
equals the unbatched one without passing position ids. Left padding is for generation, where every
row's next token must sit in the last column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["left_pad", "pad_id", "right_pad"]


def pad_id(tokenizer: Any) -> int:
    """The id that fills padded positions: the tokenizer's pad token, else its EOS token, else 0.

    The value never reaches a real token (the mask hides it), but it must be a valid embedding row;
    :func:`misdirection.models.prepare_tokenizer` sets the pad token to EOS, so this rule gives the
    same id for every model the package loads.
    """
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def _pad(seqs: Sequence[Sequence[int]], fill: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # here, not at the top: the sampler module stays importable without torch loaded

    if not seqs:
        raise ValueError("cannot pad an empty batch")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if not len(seq):
            continue
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of shape ``[len(seqs), longest]``: each row's tokens first, then ``fill``;
    ``mask`` is 1 on real tokens and 0 on padding (both int64, on the CPU)."""
    return _pad(seqs, fill, left=False)


def left_pad(seqs: Sequence[Sequence[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`right_pad`, with the padding before each row's tokens."""
    return _pad(seqs, fill, left=True)
