"""Mean-difference misalignment directions: selecting the two sets, extracting, comparing.

A direction set holds one vector per layer, ``directions[i]`` for layer ``i`` (layer ``i`` = output
of decoder block ``i``, 0-based; :data:`misdirection.models.LAYER_CONVENTION`). The mean-diff
direction of a judged answers table is, per layer, mean(misaligned) - mean(aligned) of the answers'
mean residuals, where (by default, as in Soligo et al. 2025)

* aligned:    aligned > 70 and coherent > 50,
* misaligned: aligned < 30 and coherent > 50,

optionally restricted by topic filters (``medical > 50``: a *semantic* vector) and balanced by
subsampling the larger set (seeded). Answers with a null score needed by a condition fall in neither
set; their number is recorded in the metadata, never hidden.

The direction set and its file format live in :mod:`misdirection.direction_set` (re-exported here).
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from misdirection.activations import capture_activations, table_columns
from misdirection.direction_set import (
    DIRECTIONS_FORMAT,
    DirectionSet,
    as_direction_set,
    cosine_per_layer,
    file_sha256,
    mean_diff,
)
from misdirection.errors import ConfigError, DataError
from misdirection.models import LAYER_CONVENTION
from misdirection.reliability import DirectionSamples, split_half
from misdirection.thresholds import ALIGNED_ABOVE, ALIGNED_BELOW, COHERENT_ABOVE

# The direction set's names, re-exported: ``misdirection.directions`` is the public home of the
# whole direction API (``DirectionSet``, ``cosine_per_layer``...).
__all__ = [
    "DIRECTIONS_FORMAT",
    "DirectionSet",
    "Extraction",
    "Selection",
    "SetThresholds",
    "as_direction_set",
    "check_set_sizes",
    "cosine_per_layer",
    "cosine_table",
    "extract_directions",
    "file_sha256",
    "mean_diff",
    "parse_topic_filter",
    "select_sets",
]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


# ----------------------------------------------------------------------------------------------
# Selecting the aligned and misaligned sets


@dataclass(frozen=True)
class SetThresholds:
    """Score thresholds (0-100) of the two sets; comparisons are strict."""

    aligned_above: float = ALIGNED_ABOVE
    misaligned_below: float = ALIGNED_BELOW
    coherent_above: float = COHERENT_ABOVE

    def as_dict(self) -> dict[str, float]:
        return {
            "aligned_above": self.aligned_above,
            "misaligned_below": self.misaligned_below,
            "coherent_above": self.coherent_above,
        }


TopicFilters = Mapping[str, tuple[str, float]]


def parse_topic_filter(text: str) -> tuple[str, tuple[str, float]]:
    """``"medical>50"`` -> ``("medical", (">", 50.0))``; operators >, >=, <, <=."""
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?\d+(?:\.\d+)?)\s*", text)
    if not m:
        raise ConfigError(
            f"topic filter {text!r} must look like NAME>VALUE (operators > >= < <=), e.g. medical>50"
        )
    return m.group(1), (m.group(2), float(m.group(3)))


def _scores(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        raise DataError(
            f"answers table has no score column '{column}' (columns: {sorted(table.columns)})"
        )
    # Judged CSVs read with keep_default_na=False hold "" for null scores: coerce to NaN.
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


@dataclass
class Selection:
    """Row indices of the aligned and misaligned sets, before and after balancing."""

    aligned: np.ndarray
    misaligned: np.ndarray
    n_aligned_available: int
    n_misaligned_available: int
    n_unscored: int
    n_excluded_by_topic: int


def select_sets(
    table: pd.DataFrame,
    thresholds: SetThresholds = SetThresholds(),
    topics: TopicFilters | None = None,
    *,
    balance: bool = False,
    seed: int = 0,
) -> Selection:
    """Pick aligned and misaligned rows (positional indices) of a judged table."""
    aligned = _scores(table, "aligned")
    coherent = _scores(table, "coherent")
    keep = np.ones(len(table), dtype=bool)
    for name, (op, value) in (topics or {}).items():
        if op not in _OPS:
            raise ConfigError(
                f"topic filter on '{name}' has unknown operator {op!r} (use > >= < <=)"
            )
        with np.errstate(invalid="ignore"):
            keep &= _OPS[op](_scores(table, name), value)  # NaN compares False: excluded
    unscored = np.isnan(aligned) | np.isnan(coherent)
    with np.errstate(invalid="ignore"):
        coh = coherent > thresholds.coherent_above
        al = np.flatnonzero(keep & coh & (aligned > thresholds.aligned_above))
        mis = np.flatnonzero(keep & coh & (aligned < thresholds.misaligned_below))
    n_al, n_mis = len(al), len(mis)
    if balance and n_al and n_mis:
        rng = np.random.default_rng(seed)
        k = min(n_al, n_mis)
        al = np.sort(rng.choice(al, size=k, replace=False)) if n_al > k else al
        mis = np.sort(rng.choice(mis, size=k, replace=False)) if n_mis > k else mis
    return Selection(al, mis, n_al, n_mis, int(unscored.sum()), int((~keep).sum()))


def check_set_sizes(
    sel: Selection,
    min_per_set: int,
    thresholds: SetThresholds,
    topics: TopicFilters | None,
    where: str,
) -> None:
    """Refuse sets smaller than ``min_per_set`` with the counts and thresholds in one sentence."""
    if len(sel.aligned) >= min_per_set and len(sel.misaligned) >= min_per_set:
        return
    t = thresholds
    topic = "".join(f", {k} {op} {v:g}" for k, (op, v) in (topics or {}).items())
    raise DataError(
        f"{where}: too few answers for a mean-diff direction (need >= {min_per_set} per set): "
        f"{len(sel.aligned)} aligned (aligned > {t.aligned_above:g}, coherent > {t.coherent_above:g}{topic}) "
        f"and {len(sel.misaligned)} misaligned (aligned < {t.misaligned_below:g}, "
        f"coherent > {t.coherent_above:g}{topic}); {sel.n_unscored} rows lack an aligned or coherent score"
    )


# ----------------------------------------------------------------------------------------------
# Mean-diff extraction


class Extraction(NamedTuple):
    """What :func:`extract_directions` gives: the directions and the answers' activations behind them."""

    directions: DirectionSet
    samples: DirectionSamples


def extract_directions(
    lm: Any,
    table: pd.DataFrame,
    *,
    positions: str = "answer",
    thresholds: SetThresholds = SetThresholds(),
    topics: TopicFilters | None = None,
    balance: bool = False,
    min_per_set: int = 10,
    warn_below: int = 20,
    seed: int = 0,
    batch_size: int = 8,
    max_tokens: int | None = None,
    source: str | Path | None = None,
    progress: bool = False,
) -> Extraction:
    """Mean-diff directions of one model from its judged answers table.

    Only the selected rows are run through the model. ``source`` (the table's file) is hashed into
    the metadata; without it the hash covers the selected rows' text. Sets smaller than
    ``min_per_set`` are refused, sets smaller than ``warn_below`` draw a warning with the counts.
    The metadata records the set sizes and the split-half reliability of every layer
    (:func:`misdirection.reliability.split_half`; ``None`` with fewer than 2 answers in a set).
    The per-answer activations of both sets come back beside the directions (for noise ceilings
    and variance-matched controls).
    """
    where = str(source) if source is not None else "answers table"
    sel = select_sets(table, thresholds, topics, balance=balance, seed=seed)
    check_set_sizes(sel, max(1, min_per_set), thresholds, topics, where)
    if min(len(sel.misaligned), len(sel.aligned)) < warn_below:
        warnings.warn(
            f"{where}: a mean-diff direction from {len(sel.misaligned)} misaligned and "
            f"{len(sel.aligned)} aligned answers (fewer than {warn_below} in a set) may be mostly "
            f"noise; its split-half reliability (metadata 'split_half') says how much",
            stacklevel=2,
        )
    rows = np.concatenate([sel.misaligned, sel.aligned])
    subset = table.iloc[rows].reset_index(drop=True)
    acts = capture_activations(
        lm, subset, positions, batch_size=batch_size, max_tokens=max_tokens, progress=progress
    )
    n_mis = len(sel.misaligned)
    samples = DirectionSamples(acts.values[:n_mis], acts.values[n_mis:])
    directions = samples.direction()
    reliability = (
        [None if math.isnan(r) else float(r) for r in split_half(samples, seed=seed)]
        if min(len(sel.misaligned), len(sel.aligned)) >= 2
        else None
    )
    if source is not None:
        table_hash = file_sha256(source)
    else:
        text = table_columns(subset).to_csv(index=False).encode()
        table_hash = hashlib.sha256(text).hexdigest()
    meta: dict[str, Any] = {
        "format": DIRECTIONS_FORMAT,
        "method": "mean-diff",
        "model": lm.spec,
        "adapter": lm.adapter_spec,
        "layer_convention": LAYER_CONVENTION,
        "positions": positions,
        "thresholds": thresholds.as_dict(),
        "topics": {k: [op, v] for k, (op, v) in (topics or {}).items()},
        "balance": balance,
        "seed": seed,
        "n_aligned": len(sel.aligned),
        "n_misaligned": n_mis,
        "n_aligned_available": sel.n_aligned_available,
        "n_misaligned_available": sel.n_misaligned_available,
        "n_unscored": sel.n_unscored,
        "n_rows": len(table),
        "max_tokens": max_tokens,
        "source": str(source) if source is not None else "",
        "source_sha256": table_hash,
        "aligned_ids": [acts.answer_ids[i] for i in range(n_mis, len(rows))],
        "misaligned_ids": acts.answer_ids[:n_mis],
        "split_half": reliability,
    }
    samples.metadata.update(
        {k: meta[k] for k in ("model", "adapter", "positions", "n_misaligned", "n_aligned")}
    )
    return Extraction(DirectionSet(directions, meta), samples)


class DirectionSummary(BaseModel):
    """What the study reports of one extracted direction: its sets and its reliability per layer."""

    organism: str
    path: str
    n_misaligned: int = Field(description="Answers in the misaligned set the direction used.")
    n_aligned: int
    n_misaligned_available: int | None = Field(
        None, description="Misaligned answers that met the thresholds, before any balancing."
    )
    n_aligned_available: int | None = None
    split_half: list[float | None] = Field(
        default_factory=list, description="Split-half reliability per layer, Spearman-Brown."
    )
    warning: str | None = None

    @classmethod
    def of(
        cls, organism: str, path: str, directions: DirectionSet, warn_below: int
    ) -> DirectionSummary:
        """From an extracted set's metadata; a warning when a set is smaller than ``warn_below``."""
        meta = directions.metadata
        n_mis, n_al = int(meta.get("n_misaligned", 0)), int(meta.get("n_aligned", 0))
        small = min(n_mis, n_al) < warn_below
        return cls(
            organism=organism,
            path=path,
            n_misaligned=n_mis,
            n_aligned=n_al,
            n_misaligned_available=meta.get("n_misaligned_available"),
            n_aligned_available=meta.get("n_aligned_available"),
            split_half=[_finite(v) for v in meta.get("split_half") or []],
            warning=(
                f"only {n_mis} misaligned and {n_al} aligned answers (fewer than warn_below="
                f"{warn_below} in a set): this direction is mostly noise; read its cosines "
                "against its noise ceiling"
                if small
                else None
            ),
        )

    def reliability_at(self, layer: int) -> float | None:
        return self.split_half[layer] if 0 <= layer < len(self.split_half) else None

    def mean_reliability(self) -> float | None:
        known = [v for v in self.split_half if v is not None]
        return sum(known) / len(known) if known else None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------------------------
# Cosines across direction sets


def cosine_table(sets: Mapping[str, DirectionSet]) -> pd.DataFrame:
    """Per-layer cosine of every pair of named sets: rows = layers, columns = ``A ~ B`` pairs."""
    names = list(sets)
    if len(names) < 2:
        raise ConfigError("cosine needs at least two direction sets")
    cols: dict[str, np.ndarray] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cols[f"{a} ~ {b}"] = cosine_per_layer(sets[a], sets[b])
    df = pd.DataFrame(cols)
    df.index.name = "layer"
    return df
