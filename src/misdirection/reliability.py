"""Noise ceilings for mean-diff directions, from the per-answer activations behind them.

A mean-diff direction is estimated from a few answers, so it is its true direction plus noise. With
``n_m`` misaligned and ``n_a`` aligned answers whose activations scatter with sd ``s`` in each of ``d``
dimensions, and a true difference of norm ``D``, the estimate's noise has squared norm about
``s^2 d (1/n_m + 1/n_a)``; the cosine between two independent estimates of the same direction is
then about::

    reliability = D^2 / (D^2 + s^2 d (1/n_m + 1/n_a))

(a direction from 4 vs 4 answers in a residual stream of 576 dimensions is mostly noise). Three
tools turn that into numbers a reader can check:

* :func:`split_half` estimates a direction's reliability per layer without knowing ``D`` or ``s``:
  split each set into two disjoint halves, take the cosine ``r`` between the two halves' mean-diff
  directions, average over random splits, and step up to the full sample with Spearman-Brown,
  ``2r / (1 + r)``. (Each half has twice the noise variance; under the formula above, Spearman-Brown
  of the half-sample cosine is exactly the full-sample reliability.)
* :func:`ceiling` is the cosine two directions would show *if their true directions were
  identical*: ``sqrt(rel_a * rel_b)`` (Spearman's correction for attenuation). A measured cosine
  near its ceiling is as similar as the noise allows; one well below it is a real divergence.
* :func:`bootstrap_cosine` gives the measured cosine between two directions an interval, by
  resampling answers within each of the four sets.

The per-answer activations are kept as :class:`DirectionSamples` (``<stem>.samples.safetensors``
beside a direction file, written by ``misdirection extract``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from misdirection.direction_set import mean_diff
from misdirection.errors import ConfigError, DataError, ShapeError

SAMPLES_FORMAT = "misdirection.direction-samples/1"
#: Rows resampled per matrix product in the bootstrap (bounds memory at chunk x n_layers x d).
_CHUNK = 50

__all__ = [
    "SAMPLES_FORMAT",
    "DirectionSamples",
    "bootstrap_cosine",
    "ceiling",
    "samples_path",
    "split_half",
]


def samples_path(direction_file: str | Path) -> Path:
    """Where the samples of a direction file live: ``<stem>.samples.safetensors`` beside it."""
    p = Path(direction_file)
    return p.with_name(f"{p.stem}.samples.safetensors")


@dataclass
class DirectionSamples:
    """Per-answer mean residuals [n, n_layers, d] of the two sets a mean-diff direction came from."""

    misaligned: torch.Tensor
    aligned: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.misaligned = torch.as_tensor(self.misaligned).detach().to("cpu", torch.float32)
        self.aligned = torch.as_tensor(self.aligned).detach().to("cpu", torch.float32)
        _check_shapes(self.misaligned.shape, self.aligned.shape, "direction samples")

    @property
    def n_layers(self) -> int:
        return int(self.misaligned.shape[1])

    def direction(self) -> torch.Tensor:
        """The mean-diff direction [n_layers, d]: mean(misaligned) - mean(aligned)."""
        return mean_diff(self.misaligned, self.aligned)

    def save(self, path: str | Path) -> Path:
        """Write ``misaligned`` and ``aligned`` tensors (safetensors) with the format tag."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": SAMPLES_FORMAT, **{k: json.dumps(v) for k, v in self.metadata.items()}}
        tensors = {"misaligned": self.misaligned.contiguous(), "aligned": self.aligned.contiguous()}
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DirectionSamples:
        """Read a samples file; errors name the file and what is wrong with it."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"direction samples file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = dict(f.metadata() or {})
                keys = set(f.keys())
                if raw.get("format") != SAMPLES_FORMAT:
                    raise DataError(
                        f"{path}: not a direction samples file (format {raw.get('format')!r}, "
                        f"expected {SAMPLES_FORMAT!r})"
                    )
                if not {"misaligned", "aligned"} <= keys:
                    raise DataError(
                        f"{path}: needs tensors 'misaligned' and 'aligned', holds {sorted(keys)}"
                    )
                mis, al = f.get_tensor("misaligned"), f.get_tensor("aligned")
        except (OSError, ValueError, RuntimeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"cannot read direction samples file {path}: {exc}") from None
        _check_shapes(mis.shape, al.shape, str(path))
        meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
        return cls(mis, al, meta)


def _check_shapes(mis: torch.Size, al: torch.Size, where: str) -> None:
    if len(mis) != 3 or len(al) != 3 or mis[1:] != al[1:] or mis[0] < 1 or al[0] < 1:
        raise ShapeError(
            f"{where}: misaligned and aligned must be [n, n_layers, d] with the same n_layers and d "
            f"and n >= 1; got misaligned {tuple(mis)} and aligned {tuple(al)}"
        )


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy().reshape(x.shape[0], -1)


def _cosines(a: np.ndarray, b: np.ndarray, n_layers: int) -> np.ndarray:
    """Row-wise per-layer cosines of [k, n_layers * d] arrays: [k, n_layers] (nan for a zero row)."""
    a = a.reshape(a.shape[0], n_layers, -1)
    b = b.reshape(b.shape[0], n_layers, -1)
    den = np.linalg.norm(a, axis=2) * np.linalg.norm(b, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(2) / den, np.nan)


def _half_weights(n: int, n_splits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Averaging weights of two disjoint random halves (floor(n/2) answers each) per split."""
    h = n // 2
    w1, w2 = np.zeros((n_splits, n)), np.zeros((n_splits, n))
    for s in range(n_splits):
        perm = rng.permutation(n)
        w1[s, perm[:h]] = 1.0 / h
        w2[s, perm[h : 2 * h]] = 1.0 / h
    return w1, w2


def split_half(samples: DirectionSamples, n_splits: int = 50, seed: int = 0) -> np.ndarray:
    """Estimated reliability of the full-sample direction per layer [n_layers].

    The mean over ``n_splits`` random splits (each set into two disjoint halves of ``floor(n/2)``
    answers) of the cosine ``r`` between the halves' mean-diff directions, stepped up by
    Spearman-Brown, ``2r / (1 + r)``. About 1: a stable direction; about 0 or below: noise. Needs at
    least 2 answers per set; deterministic given ``seed``.
    """
    n_m, n_a = samples.misaligned.shape[0], samples.aligned.shape[0]
    if n_m < 2 or n_a < 2:
        raise DataError(
            f"split-half reliability needs >= 2 answers per set; got {n_m} misaligned and "
            f"{n_a} aligned"
        )
    if n_splits < 1:
        raise ConfigError(f"n_splits must be >= 1, got {n_splits}")
    rng = np.random.default_rng(seed)
    m1, m2 = _half_weights(n_m, n_splits, rng)
    a1, a2 = _half_weights(n_a, n_splits, rng)
    mis, al = _flat(samples.misaligned), _flat(samples.aligned)
    half1 = m1 @ mis - a1 @ al
    half2 = m2 @ mis - a2 @ al
    r = np.nanmean(_cosines(half1, half2, samples.n_layers), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * r / (1 + r)


def ceiling(rel_a: np.ndarray, rel_b: np.ndarray) -> np.ndarray:
    """The cosine two directions would show if their true directions were identical.

    ``sqrt(max(rel_a, 0) * max(rel_b, 0))`` per layer, from each direction's reliability (the
    expected cosine between two independent estimates of it, :func:`split_half`): noise attenuates
    the measured cosine of identical truths from 1 to this value (Spearman's correction for
    attenuation). A negative reliability counts as 0: no ceiling above noise.
    """
    a, b = np.asarray(rel_a, dtype=float), np.asarray(rel_b, dtype=float)
    if a.shape != b.shape:
        raise ShapeError(f"reliabilities differ in shape: {a.shape} and {b.shape}")
    return np.sqrt(np.maximum(a, 0.0) * np.maximum(b, 0.0))


def bootstrap_cosine(
    a: DirectionSamples,
    b: DirectionSamples,
    n_resamples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer cosine between the directions of ``a`` and ``b`` with a bootstrap interval.

    Returns ``(value, low, high)``, each [n_layers]. Each resample redraws, with replacement, the
    answers of each of the four sets (misaligned and aligned of ``a`` and of ``b``). The cosine of
    resampled means is attenuated a second time by the resampling noise, so the raw percentiles sit
    below the measured cosine; the interval therefore takes the bootstrap distribution's spread
    about its median and centres it on the measured ``value`` (clipped to [-1, 1]). It is an
    interval for the cosine this design measures, comparable with :func:`ceiling`.
    """
    if a.misaligned.shape[1:] != b.misaligned.shape[1:]:
        raise ShapeError(
            f"cannot compare directions of samples shaped {tuple(a.misaligned.shape[1:])} and "
            f"{tuple(b.misaligned.shape[1:])} (n_layers, d)"
        )
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 2:
        raise ConfigError(f"n_resamples must be >= 2, got {n_resamples}")
    n_layers = a.n_layers
    value = _cosines(
        a.direction().double().numpy().reshape(1, -1),
        b.direction().double().numpy().reshape(1, -1),
        n_layers,
    )[0]
    rng = np.random.default_rng(seed)
    sets = [_flat(a.misaligned), _flat(a.aligned), _flat(b.misaligned), _flat(b.aligned)]
    # A resample of n rows with replacement is a multinomial count vector; its mean is counts/n @ x.
    weights = [
        rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=n_resamples) / len(x)
        for x in sets
    ]
    cos = np.empty((n_resamples, n_layers))
    for start in range(0, n_resamples, _CHUNK):
        am, aa, bm, ba = (w[start : start + _CHUNK] @ x for w, x in zip(weights, sets, strict=True))
        cos[start : start + _CHUNK] = _cosines(am - aa, bm - ba, n_layers)
    alpha = 1 - confidence
    lo_q, med, hi_q = np.nanquantile(cos, [alpha / 2, 0.5, 1 - alpha / 2], axis=0)
    low = np.clip(value - (med - lo_q), -1.0, 1.0)
    high = np.clip(value + (hi_q - med), -1.0, 1.0)
    return value, low, high


# ----------------------------------------------------------------------------------------------
# How many answers a direction needs


class SetSizePlan(BaseModel):
    """How many answers per set would bring a direction's reliability to ``target`` at ``layer``.

    Spearman-Brown prophecy: scaling both sets by ``k`` divides the noise by ``k``, so a
    reliability ``r`` becomes ``k r / (1 + (k - 1) r)``; solved for the target,
    ``k = target (1 - r) / (r (1 - target))``. Undefined when ``r <= 0`` (no signal measured).
    """

    layer: int
    reliability: float | None
    target: float
    n_misaligned: int
    n_aligned: int
    factor: float | None
    n_misaligned_needed: int | None
    n_aligned_needed: int | None

    def text(self) -> str:
        here = f"{self.n_misaligned} misaligned and {self.n_aligned} aligned answers"
        if self.reliability is None or self.factor is None:
            return (
                f"layer {self.layer}: reliability {self.reliability if self.reliability is None else f'{self.reliability:.2f}'} "
                f"from {here}: no signal measured, so no set size can be planned from it"
            )
        if self.factor <= 1:
            return f"layer {self.layer}: reliability {self.reliability:.2f} from {here} reaches the target {self.target:g}"
        return (
            f"layer {self.layer}: reliability {self.reliability:.2f} from {here}; about "
            f"{self.n_misaligned_needed} misaligned and {self.n_aligned_needed} aligned answers "
            f"({self.factor:.1f}x) would reach {self.target:g} (Spearman-Brown)"
        )


def plan_set_sizes(
    reliability: float | None, n_misaligned: int, n_aligned: int, layer: int, target: float = 0.8
) -> SetSizePlan:
    """The set sizes that would reach ``target`` reliability (see :class:`SetSizePlan`)."""
    if not 0 < target < 1:
        raise ConfigError(f"target reliability must be in (0, 1), got {target}")
    factor = None
    if reliability is not None and np.isfinite(reliability) and reliability > 0:
        r = min(float(reliability), 0.999999)
        factor = max(1.0, target * (1 - r) / (r * (1 - target)))
    return SetSizePlan(
        layer=layer,
        reliability=None if reliability is None else float(reliability),
        target=target,
        n_misaligned=n_misaligned,
        n_aligned=n_aligned,
        factor=factor,
        n_misaligned_needed=None
        if factor is None
        else int(np.ceil(round(factor * n_misaligned, 6))),
        n_aligned_needed=None if factor is None else int(np.ceil(round(factor * n_aligned, 6))),
    )
