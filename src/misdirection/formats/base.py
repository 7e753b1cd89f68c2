"""What every foreign direction format shares: the vectors it reads into, and its description.

Our layer convention (:data:`misdirection.models.LAYER_CONVENTION`): layer ``i`` is the output of
decoder block ``i``, 0-based. Each format states how its own layer index maps onto that
(``layer_map``), and readers return rows already in our convention.

This module is low in the package: it imports nothing of misdirection but the errors, so that the
direction-file code can call into it.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from misdirection.errors import DataError, ShapeError

#: Metadata keys that name where a direction came from, how big its sets were and how reliable it
#: is; a format that cannot carry them draws a warning naming the ones present.
PROVENANCE_KEYS = (
    "model",
    "adapter",
    "source",
    "source_sha256",
    "positions",
    "thresholds",
    "topics",
)
SET_SIZE_KEYS = ("n_aligned", "n_misaligned", "n_aligned_available", "n_misaligned_available")
RELIABILITY_KEYS = ("split_half",)


#: What ``torch.load`` raises for a file it cannot (or, weights-only, will not) read.
TORCH_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError)


@dataclass
class LayerVectors:
    """Per-layer vectors read from a file, already in our layer convention.

    ``directions`` is dense, [n_layers, d] float32; a layer the file does not hold is a zero row and
    is absent from ``layers``. ``metadata`` is what the file carried (our own keys when it was
    written by us) plus ``source_format`` and ``source_layer_map``.
    """

    directions: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.directions.ndim != 2:
            raise ShapeError(
                f"layer vectors must be [n_layers, d]; got {tuple(self.directions.shape)}"
            )
        self.directions = self.directions.detach().to("cpu", torch.float32).contiguous()
        if not self.layers:
            self.layers = tuple(range(self.directions.shape[0]))


@dataclass(frozen=True)
class Format:
    """One foreign format: its name, how to recognise, read and write it, and its layer mapping."""

    name: str
    description: str
    #: How the format's layer index relates to ours (one sentence, recorded in files and tables).
    layer_map: str
    suffixes: tuple[str, ...]
    read: Callable[[Path], LayerVectors]
    #: ``write(directions [n_layers, d], metadata, path, layer)`` -> the paths written.
    write: Callable[[torch.Tensor, Mapping[str, Any], Path, int | None], list[Path]]
    #: What this format cannot carry, beyond what :func:`warn_lost` finds in the metadata.
    carries_metadata: bool = False


def dense(
    rows: Mapping[int, torch.Tensor], where: str, n_layers: int | None = None
) -> torch.Tensor:
    """Stack ``{layer: [d]}`` into [n_layers, d] (zero rows where absent); widths must agree."""
    if not rows:
        raise DataError(f"{where}: holds no vectors")
    widths = {int(v.numel()) for v in rows.values()}
    if len(widths) != 1:
        raise ShapeError(f"{where}: its vectors differ in width ({sorted(widths)})")
    if min(rows) < 0:
        raise DataError(
            f"{where}: layer {min(rows)} is negative; a file must name layers from 0 (the model's "
            "layer count is needed to resolve negative ones)"
        )
    n = max(rows) + 1 if n_layers is None else n_layers
    out = torch.zeros(n, widths.pop(), dtype=torch.float32)
    for layer, v in rows.items():
        out[layer] = v.detach().reshape(-1).to(torch.float32)
    return out


def lost_fields(metadata: Mapping[str, Any]) -> list[str]:
    """The provenance, set-size and reliability entries present in ``metadata``, as ``key=value``."""
    out = []
    for key in (*PROVENANCE_KEYS, *SET_SIZE_KEYS, *RELIABILITY_KEYS):
        value = metadata.get(key)
        if value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        out.append(f"{key}={text[:40]}{'...' if len(text) > 40 else ''}")
    return out


def warn_lost(
    fmt: str, path: Path, metadata: Mapping[str, Any], extra: list[str] | None = None
) -> list[str]:
    """Warn, naming them, about the entries a format cannot carry; returns them (for reports)."""
    lost = [*(extra or []), *lost_fields(metadata)]
    if lost:
        warnings.warn(
            f"{path}: the {fmt} format cannot carry {'; '.join(lost)}: written without them",
            stacklevel=3,
        )
    return lost


def to_str_metadata(metadata: Mapping[str, Any]) -> str:
    """Our metadata as one JSON string (for formats with a free-text slot)."""
    return json.dumps(dict(metadata), sort_keys=True, default=str)


def from_str_metadata(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: its misdirection metadata is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: its misdirection metadata is not a JSON object")
    return value


def load_pt(path: Path) -> Any:
    """``torch.load`` without running pickled code (tensors, lists, dicts, numbers, strings)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        raise DataError(f"cannot read {path} as a torch file: {str(exc).splitlines()[0]}") from None
