"""Mean-difference misalignment directions, direction files and cosines.

A direction set holds one vector per layer, ``directions[i]`` for layer ``i`` (layer ``i`` = output
of decoder block ``i``, 0-based; :data:`misdirection.models.LAYER_CONVENTION`). The mean-diff
direction of a judged answers table is, per layer, mean(misaligned) - mean(aligned) of the answers'
mean residuals, where (by default, as in Soligo et al. 2025)

* aligned:    aligned > 70 and coherent > 50,
* misaligned: aligned < 30 and coherent > 50,

optionally restricted by topic filters (``medical > 50``: a *semantic* vector) and balanced by
subsampling the larger set (seeded). Answers with a null score needed by a condition fall in neither
set; their number is recorded in the metadata, never hidden.

File format (safetensors): tensor ``directions`` float32 [n_layers, d_model]; metadata str->str with
``format`` = ``misdirection.directions/1``, ``method``, ``model``, ``adapter``, ``layer_convention``,
``positions`` and method-specific keys whose values are JSON-encoded.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from misdirection.errors import ConfigError, DataError, ShapeError, check_layer
from misdirection.models import LAYER_CONVENTION
from misdirection.thresholds import ALIGNED_ABOVE, ALIGNED_BELOW, COHERENT_ABOVE

if TYPE_CHECKING:
    from misdirection.reliability import DirectionSamples

DIRECTIONS_FORMAT = "misdirection.directions/1"
# Plain-string metadata keys; every other key is JSON-encoded.
_STR_KEYS = ("format", "method", "model", "adapter", "layer_convention", "positions")
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


# ----------------------------------------------------------------------------------------------
# Direction sets and files


@dataclass
class DirectionSet:
    """Per-layer directions [n_layers, d_model] (float32) and their provenance."""

    directions: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        d = torch.as_tensor(self.directions)
        if d.ndim == 1:
            d = d[None]
        if d.ndim != 2:
            raise ShapeError(f"directions must be [n_layers, d_model]; got shape {tuple(d.shape)}")
        self.directions = d.detach().to("cpu", torch.float32).contiguous()
        self.metadata.setdefault("format", DIRECTIONS_FORMAT)
        self.metadata.setdefault("layer_convention", LAYER_CONVENTION)

    @property
    def n_layers(self) -> int:
        return int(self.directions.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.directions.shape[1])

    @property
    def method(self) -> str:
        return str(self.metadata.get("method", ""))

    def layer(self, layer: int) -> torch.Tensor:
        """The direction of one layer, [d_model] (negative indices count from the end)."""
        return self.directions[check_layer(layer, self.n_layers, "direction layer")]

    def norms(self) -> torch.Tensor:
        """Per-layer Euclidean norms [n_layers]."""
        return self.directions.norm(dim=1)

    def unit(self) -> torch.Tensor:
        """Unit-norm rows; a zero row stays zero."""
        n = self.norms().clamp_min(torch.finfo(torch.float32).tiny)
        return self.directions / n[:, None]

    def sha256(self) -> str:
        """Content hash of the tensor (little-endian float32 bytes)."""
        return hashlib.sha256(self.directions.numpy().astype("<f4").tobytes()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the safetensors direction file; returns its path."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: (str(v) if k in _STR_KEYS else json.dumps(v)) for k, v in self.metadata.items()}
        save_file({"directions": self.directions}, str(path), metadata=meta)
        self.path = str(path)
        return path

    @classmethod
    def load(cls, path: str | Path, format: str | None = None) -> DirectionSet:
        """Read a direction file, or any .safetensors/.pt/.npy file with a [d] or [n_layers, d] tensor.

        Files in the field's formats (GGUF control vectors, steering-vectors, persona_vectors, ...;
        :mod:`misdirection.formats`) are recognised, or named as ``format`` / ``FORMAT:PATH``, and
        read in our layer convention.
        """
        from misdirection.formats import read_foreign

        path, foreign, rereadable = read_foreign(path, format)
        if foreign is not None:
            return cls(foreign.directions, foreign.metadata, str(path) if rereadable else None)
        if not path.is_file():
            raise DataError(f"direction file {path} does not exist")
        suffix = path.suffix.lower()
        meta: dict[str, Any] = {}
        try:
            if suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    keys = list(f.keys())
                    raw = dict(f.metadata() or {})
                    key = (
                        "directions"
                        if "directions" in keys
                        else keys[0]
                        if len(keys) == 1
                        else None
                    )
                    if key is None:
                        raise DataError(
                            f"{path}: holds tensors {keys}; expected 'directions' or a single tensor"
                        )
                    tensor = f.get_tensor(key).float()
                meta = {k: (v if k in _STR_KEYS else _json_or_str(v)) for k, v in raw.items()}
            elif suffix in (".pt", ".pth"):
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
                if isinstance(obj, dict) and "directions" in obj:
                    obj = obj["directions"]
                if not isinstance(obj, torch.Tensor):
                    raise DataError(f"{path}: expected a tensor, found {type(obj).__name__}")
                tensor = obj.float()
            elif suffix == ".npy":
                tensor = torch.from_numpy(np.load(str(path))).float()
            else:
                raise DataError(
                    f"{path}: direction files must end in .safetensors, .pt, .npy or .gguf "
                    "(or name their format as FORMAT:PATH)"
                )
        except (OSError, ValueError, RuntimeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"cannot read direction file {path}: {exc}") from None
        if tensor.ndim not in (1, 2):
            raise ShapeError(
                f"{path}: expected a [d] or [n_layers, d] tensor, got {tuple(tensor.shape)}"
            )
        return cls(tensor, meta, path=str(path))

    def reference(self) -> dict[str, Any]:
        """How an intervention spec points back at this set (rebuilt by :func:`resolve_reference`).

        A random control (:mod:`misdirection.controls`) is named by its seed, kind and reference;
        the second moments its metadata records are results, not identity, and stay out. A
        variance-matched control also carries its vectors: rebuilding it from the seed would need
        the activations it was matched on.
        """
        rc = self.metadata.get("random_control")
        if isinstance(rc, dict):
            identity = {
                k: rc[k]
                for k in ("seed", "kind", "reference", "tolerance", "activations_sha256")
                if k in rc
            }
            if identity.get("kind", "isotropic") == "isotropic":
                return {"random_control": identity}
            if self.path is not None:  # saved (the engine keeps them in its store): point at it
                return {
                    "random_control": identity,
                    "path": str(Path(self.path).resolve()),
                    "sha256": self.sha256(),
                }
            return {
                "random_control": identity,
                "inline": self.directions.tolist(),
                "sha256": self.sha256(),
            }
        if self.path is not None:
            return {"path": str(Path(self.path).resolve()), "sha256": self.sha256()}
        return {"inline": self.directions.tolist(), "sha256": self.sha256()}


def _json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def as_direction_set(obj: DirectionSet | torch.Tensor | np.ndarray | str | Path) -> DirectionSet:
    """Accept a DirectionSet, a [d]/[n_layers, d] tensor or array, or a path to a direction file."""
    if isinstance(obj, DirectionSet):
        return obj
    if isinstance(obj, (str, Path)):
        return DirectionSet.load(obj)
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if isinstance(obj, torch.Tensor):
        return DirectionSet(obj.detach().float(), {"method": "tensor"})
    raise ConfigError(
        f"expected a DirectionSet, tensor or direction file; got {type(obj).__name__}"
    )


def resolve_reference(ref: Mapping[str, Any]) -> DirectionSet:
    """Rebuild the direction set an intervention spec points at (see :meth:`DirectionSet.reference`)."""
    if "random_control" in ref:
        from misdirection.controls import random_control

        rc = ref["random_control"]
        kind = rc.get("kind", "isotropic")
        if kind == "isotropic":
            return random_control(resolve_reference(rc["reference"]), seed=int(rc["seed"]))
        if "path" in ref:
            ds = DirectionSet.load(ref["path"])
            if ref.get("sha256") and ds.sha256() != ref["sha256"]:
                raise DataError(
                    f"random-control file {ref['path']} has changed since the spec was recorded"
                )
            return ds
        if "inline" not in ref:
            raise ConfigError(
                f"a {kind} random control cannot be rebuilt from its seed alone (it was matched on "
                f"activations); its spec must carry the vectors ('inline')"
            )
        ds = DirectionSet(
            torch.tensor(ref["inline"], dtype=torch.float32),
            {"method": "random-control", "random_control": dict(rc)},
        )
        if ref.get("sha256") and ds.sha256() != ref["sha256"]:
            raise DataError(
                f"the inline vectors of a {kind} random control do not match their recorded sha256"
            )
        return ds
    if "path" in ref:
        ds = DirectionSet.load(ref["path"])
        if ref.get("sha256") and ds.sha256() != ref["sha256"]:
            raise DataError(
                f"direction file {ref['path']} has changed since the spec was recorded "
                f"(sha256 {ds.sha256()[:12]} != {str(ref['sha256'])[:12]})"
            )
        return ds
    if "inline" in ref:
        return DirectionSet(torch.tensor(ref["inline"], dtype=torch.float32), {"method": "inline"})
    raise ConfigError(
        f"cannot rebuild a direction set from {sorted(ref)} (need path, inline or random_control)"
    )


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the source answers table of a direction)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def mean_diff(misaligned: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
    """Per-layer mean(misaligned) - mean(aligned) of [n, n_layers, d] activations (float64 sums)."""
    if misaligned.shape[1:] != aligned.shape[1:]:
        raise ShapeError(
            f"activation sets differ in shape: misaligned {tuple(misaligned.shape)}, aligned {tuple(aligned.shape)}"
        )
    return (misaligned.double().mean(0) - aligned.double().mean(0)).float()


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
    from misdirection.activations import capture_activations, table_columns
    from misdirection.reliability import DirectionSamples, split_half

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


# ----------------------------------------------------------------------------------------------
# Cosines across direction sets


def cosine_per_layer(a: DirectionSet | torch.Tensor, b: DirectionSet | torch.Tensor) -> np.ndarray:
    """Cosine similarity of two direction sets, layer by layer: [n_layers] (NaN where a row is zero)."""
    a, b = as_direction_set(a), as_direction_set(b)
    if a.directions.shape != b.directions.shape:
        raise ShapeError(
            f"cannot compare direction sets of shapes {tuple(a.directions.shape)} and {tuple(b.directions.shape)}"
        )
    x, y = a.directions.double(), b.directions.double()
    den = x.norm(dim=1) * y.norm(dim=1)
    cos = (x * y).sum(1) / den
    cos[den == 0] = math.nan
    return cos.numpy()


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
