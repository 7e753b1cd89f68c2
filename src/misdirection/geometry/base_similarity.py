"""How far each fine-tune's direction moved from the base model's (the pre-print's Figure 3).

For every vector with a base-model direction (the same extraction run on the base model): its
cosine to the base direction at the vector's own layer, the mean per group (lab or training
procedure, from the clusters file) and, when both files hold every layer, the layer-wise trace of
that cosine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np

from misdirection.errors import ConfigError, ShapeError

UNGROUPED = "ungrouped"


class VectorBase(TypedDict):
    """One vector's cosine to its base-model direction at the vector's own layer."""

    group: str
    layer: int | None
    cosine: float


class LayerTrace(TypedDict):
    """The cosine to the base direction at every layer (``layer``: the vector's own)."""

    group: str
    layers: list[int]
    cosine: list[float]
    layer: int | None


class GroupBase(TypedDict):
    """Mean, min and max of the member vectors' cosines to their base directions."""

    mean: float
    min: float
    max: float
    n: int
    members: list[str]


class BaseSimilarity(TypedDict):
    """:func:`base_similarity`'s result."""

    vectors: dict[str, VectorBase]
    groups: dict[str, GroupBase]
    traces: dict[str, LayerTrace]
    notes: list[str]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of matching rows (last axis); NaN where a row is zero."""
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def group_of(names: Sequence[str], groups: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """Vector name -> group name (``ungrouped`` when absent); ConfigError for unknown or shared
    members."""
    out = {n: UNGROUPED for n in names}
    seen: dict[str, str] = {}
    for g, members in (groups or {}).items():
        for m in members:
            if m not in out:
                raise ConfigError(
                    f"group {g!r} names unknown vector {m!r}; known vectors: {', '.join(names)}"
                )
            if m in seen:
                raise ConfigError(f"vector {m!r} is in both group {seen[m]!r} and {g!r}")
            seen[m] = g
            out[m] = str(g)
    return out


def base_similarity(
    vectors: Mapping[str, np.ndarray],
    bases: Mapping[str, np.ndarray],
    layers: Mapping[str, int | None] | None = None,
    stacks: Mapping[str, np.ndarray] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> BaseSimilarity:
    """Cosine of each vector to its base-model direction, group means and layer-wise traces.

    ``vectors``: name -> [d] (the vector the suite compares); ``bases``: name -> base direction
    [d] or [n_layers, d]; ``layers``: name -> the layer the vector was taken at (needed to pick
    the base row from a multi-layer base); ``stacks``: name -> every layer of the vector's file
    [n_layers, d] (for the traces); ``groups``: group -> member names. Vectors without a base are
    left out with a note.
    """
    names = list(vectors)
    layers = dict(layers or {})
    stacks = dict(stacks or {})
    member = group_of(names, groups)
    unknown = [n for n in bases if n not in vectors]
    if unknown:
        raise ConfigError(f"base directions given for unknown vectors {unknown}; known: {names}")
    notes: list[str] = []
    per: dict[str, VectorBase] = {}
    traces: dict[str, LayerTrace] = {}
    for name in names:
        if name not in bases:
            notes.append(f"{name}: no base-model direction, left out of the base similarity")
            continue
        v = np.asarray(vectors[name], dtype=float).reshape(-1)
        B = np.asarray(bases[name], dtype=float)
        B = B[None] if B.ndim == 1 else B
        if B.ndim != 2 or B.shape[1] != v.shape[0]:
            raise ShapeError(
                f"base direction of {name!r} has shape {list(B.shape)}; expected [d] or "
                f"[n_layers, d] with d = {v.shape[0]}"
            )
        layer = layers.get(name)
        if B.shape[0] == 1:
            row = B[0]
        elif layer is None:
            raise ConfigError(
                f"base direction of {name!r} holds {B.shape[0]} layers but the vector's layer is "
                "unknown; give the vector's layer"
            )
        elif not -B.shape[0] <= layer < B.shape[0]:
            raise ConfigError(
                f"{name!r} was taken at layer {layer} but its base direction has only "
                f"{B.shape[0]} layers"
            )
        else:
            row = B[layer]
        per[name] = {"group": member[name], "layer": layer, "cosine": float(_cos(v, row))}
        S = stacks.get(name)
        if S is not None and np.asarray(S).ndim == 2 and np.asarray(S).shape[0] > 1:
            S = np.asarray(S, dtype=float)
            if S.shape == B.shape:
                traces[name] = {
                    "group": member[name],
                    "layers": list(range(S.shape[0])),
                    "cosine": _cos(S, B).tolist(),
                    "layer": layer,
                }
            else:
                notes.append(
                    f"{name}: vector file {list(S.shape)} and base {list(B.shape)} differ in "
                    "shape: no layer-wise trace"
                )
    by_group: dict[str, list[float]] = {}
    for name, p in per.items():
        by_group.setdefault(p["group"], []).append(p["cosine"])
    group_means: dict[str, GroupBase] = {
        g: {
            "mean": float(np.mean(c)),
            "min": float(np.min(c)),
            "max": float(np.max(c)),
            "n": len(c),
            "members": [n for n, p in per.items() if p["group"] == g],
        }
        for g, c in by_group.items()
    }
    return {"vectors": per, "groups": group_means, "traces": traces, "notes": notes}
