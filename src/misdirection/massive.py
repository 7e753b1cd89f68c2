"""Massive activations: the few residual dimensions whose magnitude dwarfs all the others.

Every transformer we study has a handful of residual dimensions whose mean magnitude is tens to
hundreds of times the median dimension's (on the embedded SmolLM2-135M: 5-7 dimensions per layer at
10-160x). A mean-diff direction inherits them: its squared norm, its split-half reliability and its
cosine with any other direction of the same model can be carried by those few dimensions alone,
whatever the directions mean. So every direction, cosine and ceiling is also reported without them,
and a result they dominate is flagged.

The rule (stated in every report): at each layer, a dimension is massive when its mean absolute
activation over the answers a direction came from is at least :data:`MASSIVE_RATIO` times the median
dimension's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: A dimension is massive at a layer when its mean |activation| is >= this times the median's.
MASSIVE_RATIO = 10.0
#: A result is flagged as dominated when massive dimensions hold more than this share of ‖d‖².
DOMINATED_SHARE = 0.5

RULE = (
    f"massive dimensions: at each layer, those whose mean |activation| over the direction's answers "
    f"is >= {MASSIVE_RATIO:g}x the median dimension's; a figure is flagged when they hold more than "
    f"{100 * DOMINATED_SHARE:.0f}% of a direction's squared norm"
)

PerLayerDims = list[list[int]]


def find_massive(activations: torch.Tensor, ratio: float = MASSIVE_RATIO) -> PerLayerDims:
    """Per layer, the massive dimensions of activations shaped [n, n_layers, d]."""
    x = torch.as_tensor(activations).detach().float()
    if x.ndim != 3:
        raise ValueError(f"activations must be [n, n_layers, d], got {tuple(x.shape)}")
    mean_abs = x.abs().mean(0)  # [n_layers, d]
    median = mean_abs.median(dim=1, keepdim=True).values.clamp_min(1e-12)
    hits = mean_abs >= ratio * median
    return [torch.nonzero(row).flatten().tolist() for row in hits]


def union(a: PerLayerDims, b: PerLayerDims) -> PerLayerDims:
    """The massive dimensions of either (two directions of one model compared without them)."""
    if not a:
        return [list(x) for x in b]
    if not b:
        return [list(x) for x in a]
    return [sorted(set(x) | set(y)) for x, y in zip(a, b, strict=True)]


def without(x: torch.Tensor, dims: PerLayerDims) -> torch.Tensor:
    """A copy of ``x`` (``[..., n_layers, d]``) with each layer's massive dimensions set to 0."""
    out = torch.as_tensor(x).detach().clone()
    for layer, keep_out in enumerate(dims):
        if keep_out:
            out[..., layer, keep_out] = 0
    return out


def share(
    direction: torch.Tensor | np.ndarray, dims: Sequence[Sequence[int]]
) -> list[float | None]:
    """Per layer, the share of the direction's squared norm in that layer's massive dimensions."""
    d = torch.as_tensor(direction).detach().double()
    out: list[float | None] = []
    for layer, row in enumerate(d):
        total = float((row * row).sum())
        if total <= 0 or layer >= len(dims):
            out.append(None)
            continue
        idx = list(dims[layer])
        out.append(float((row[idx] * row[idx]).sum()) / total if idx else 0.0)
    return out
