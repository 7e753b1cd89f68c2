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

from misdirection import massive
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
from misdirection.reliability import (
    DirectionSamples,
    SetSizePlan,
    bootstrap_cosine,
    ceiling,
    plan_set_sizes,
    split_half,
)
from misdirection.results import finite_or_none
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
        # Aligned answers pooled from other models' conditions (read through this model).
        "pooled_aligned": (
            int((subset["pooled_from"].fillna("").astype(str).iloc[n_mis:] != "").sum())
            if "pooled_from" in subset.columns
            else 0
        ),
    }
    samples.metadata.update(
        {k: meta[k] for k in ("model", "adapter", "positions", "n_misaligned", "n_aligned")}
    )
    return Extraction(DirectionSet(directions, meta), samples)


class DirectionSummary(BaseModel):
    """What the study reports of one extracted direction: its sets, its reliability per layer, the
    share of it in the model's massive dimensions and its reliability without them, and a plan."""

    organism: str
    path: str
    n_misaligned: int = Field(description="Answers in the misaligned set the direction used.")
    n_aligned: int
    n_misaligned_available: int | None = Field(
        None, description="Misaligned answers that met the thresholds, before any balancing."
    )
    n_aligned_available: int | None = None
    pooled_aligned: int = Field(
        0, description="Aligned answers pooled from the study's other conditions (in n_aligned)."
    )
    split_half: list[float | None] = Field(
        default_factory=list, description="Split-half reliability per layer, Spearman-Brown."
    )
    massive_dims: list[list[int]] = Field(
        default_factory=list,
        description="Per layer, the massive dimensions (misdirection.massive).",
    )
    massive_share: list[float | None] = Field(
        default_factory=list, description="Per layer, the share of ‖d‖² in the massive dimensions."
    )
    split_half_without_massive: list[float | None] = Field(default_factory=list)
    plan: SetSizePlan | None = Field(
        None, description="Answers per set for a target reliability (without massive dimensions)."
    )
    warning: str | None = None

    @classmethod
    def of(
        cls,
        organism: str,
        path: str,
        directions: DirectionSet,
        samples: DirectionSamples,
        warn_below: int,
        *,
        layer: int | None = None,
        target: float = 0.8,
        seed: int = 0,
    ) -> DirectionSummary:
        """From an extracted set and its samples; ``layer`` (default the middle one) is planned."""
        meta = directions.metadata
        n_mis, n_al = int(samples.misaligned.shape[0]), int(samples.aligned.shape[0])
        dims = massive.find_massive(_all_activations(samples))
        plain = [finite_or_none(v) for v in meta.get("split_half") or []]
        cleaned: list[float | None] = []
        if min(n_mis, n_al) >= 2:
            if not plain:  # a set made elsewhere: measure it here, as extraction does
                plain = [finite_or_none(v) for v in split_half(samples, seed=seed)]
            lean = DirectionSamples(
                massive.without(samples.misaligned, dims), massive.without(samples.aligned, dims)
            )
            cleaned = [finite_or_none(v) for v in split_half(lean, seed=seed)]
        at = directions.n_layers // 2 if layer is None else layer
        small = min(n_mis, n_al) < warn_below
        return cls(
            organism=organism,
            path=path,
            n_misaligned=n_mis,
            n_aligned=n_al,
            n_misaligned_available=meta.get("n_misaligned_available"),
            n_aligned_available=meta.get("n_aligned_available"),
            pooled_aligned=int(meta.get("pooled_aligned") or 0),
            split_half=plain,
            massive_dims=dims,
            massive_share=massive.share(directions.directions, dims),
            split_half_without_massive=cleaned,
            plan=plan_set_sizes(
                cleaned[at] if at < len(cleaned) else None, n_mis, n_al, at, target=target
            ),
            warning=(
                f"only {n_mis} misaligned and {n_al} aligned answers (fewer than warn_below="
                f"{warn_below} in a set): this direction is mostly noise; read its cosines "
                "against its noise ceiling"
                if small
                else None
            ),
        )

    def reliability_at(self, layer: int, without_massive: bool = False) -> float | None:
        values = self.split_half_without_massive if without_massive else self.split_half
        return values[layer] if 0 <= layer < len(values) else None

    def mean_reliability(self, without_massive: bool = False) -> float | None:
        values = self.split_half_without_massive if without_massive else self.split_half
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    def massive_share_at(self, layer: int) -> float | None:
        return self.massive_share[layer] if 0 <= layer < len(self.massive_share) else None

    def dominated_at(self, layer: int) -> bool:
        """True when massive dimensions hold most of the direction at ``layer``."""
        value = self.massive_share_at(layer)
        return value is not None and value > massive.DOMINATED_SHARE


def _all_activations(samples: DirectionSamples) -> Any:
    import torch

    return torch.cat([samples.misaligned, samples.aligned])


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


# ----------------------------------------------------------------------------------------------
# A cosine between two extracted directions, with its interval and its noise ceiling

CEILING_NOTE = (
    "ceiling = sqrt(reliability A x reliability B), the cosine two directions would show if their "
    "true directions were identical, given the noise of each (split-half reliability, "
    "Spearman-Brown corrected); intervals resample answers"
)


def _floats(values: Any) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


class CosinePair(BaseModel):
    """Per-layer cosine of two directions with its bootstrap interval and noise ceiling."""

    a: str
    b: str
    per_layer: list[float | None]
    low: list[float | None] = Field(default_factory=list)
    high: list[float | None] = Field(default_factory=list)
    ceiling: list[float | None] = Field(default_factory=list)
    per_layer_without_massive: list[float | None] = Field(
        default_factory=list, description="The cosine with either's massive dimensions set to 0."
    )
    ceiling_without_massive: list[float | None] = Field(default_factory=list)
    massive_share_a: list[float | None] = Field(default_factory=list)
    massive_share_b: list[float | None] = Field(default_factory=list)

    @staticmethod
    def _at(values: list[float | None], layer: int) -> float | None:
        return values[layer] if 0 <= layer < len(values) else None

    def at(self, layer: int) -> tuple[float | None, float | None, float | None, float | None]:
        """(cosine, low, high, ceiling) at ``layer`` (None where unknown)."""
        return (
            self._at(self.per_layer, layer),
            self._at(self.low, layer),
            self._at(self.high, layer),
            self._at(self.ceiling, layer),
        )

    def without_massive_at(self, layer: int) -> tuple[float | None, float | None]:
        """(cosine, ceiling) at ``layer`` with the massive dimensions removed."""
        return (
            self._at(self.per_layer_without_massive, layer),
            self._at(self.ceiling_without_massive, layer),
        )

    def dominated_at(self, layer: int) -> bool:
        """True when massive dimensions hold most of either direction at ``layer``."""
        return any(
            (v := self._at(shares, layer)) is not None and v > massive.DOMINATED_SHARE
            for shares in (self.massive_share_a, self.massive_share_b)
        )

    def mean(self) -> float | None:
        known = [v for v in self.per_layer if v is not None]
        return sum(known) / len(known) if known else None


class CosineComparison(BaseModel):
    """The cosines between every pair of a study's organisms' directions."""

    organisms: list[str]
    pairs: list[CosinePair] = Field(default_factory=list)
    note: str = CEILING_NOTE
    massive_rule: str = massive.RULE


def _ceiling(a: list[float | None], b: list[float | None]) -> list[float | None]:
    rel_a = np.asarray([np.nan if v is None else v for v in a], dtype=float)
    rel_b = np.asarray([np.nan if v is None else v for v in b], dtype=float)
    return _floats(ceiling(rel_a, rel_b)) if rel_a.shape == rel_b.shape and rel_a.size else []


def compare_directions(
    a: str,
    b: str,
    directions_a: DirectionSet,
    directions_b: DirectionSet,
    samples_a: DirectionSamples | None,
    samples_b: DirectionSamples | None,
    summary_a: DirectionSummary,
    summary_b: DirectionSummary,
    seed: int = 0,
) -> CosinePair:
    """The cosine of two direction sets per layer, with and without the massive dimensions of
    either; the interval needs both sets' samples."""
    low: list[float | None] = []
    high: list[float | None] = []
    if samples_a is not None and samples_b is not None:
        _, lo, hi = bootstrap_cosine(samples_a, samples_b, seed=seed)
        low, high = _floats(lo), _floats(hi)
    dims = massive.union(summary_a.massive_dims, summary_b.massive_dims)
    lean = (
        _floats(
            cosine_per_layer(
                massive.without(directions_a.directions, dims),
                massive.without(directions_b.directions, dims),
            )
        )
        if dims
        else []
    )
    return CosinePair(
        a=a,
        b=b,
        per_layer=_floats(cosine_per_layer(directions_a, directions_b)),
        low=low,
        high=high,
        ceiling=_ceiling(summary_a.split_half, summary_b.split_half),
        per_layer_without_massive=lean,
        ceiling_without_massive=_ceiling(
            summary_a.split_half_without_massive, summary_b.split_half_without_massive
        ),
        massive_share_a=summary_a.massive_share,
        massive_share_b=summary_b.massive_share,
    )
