"""repeng's ``ControlVector``: ``model_type`` and ``directions`` {layer: ndarray[d]}.

repeng's ``ControlModel`` wraps ``model.layers[k]`` and adds ``directions[k]`` to that block's
output, so ``k`` is our layer ``k`` (negative ``k`` count from the end, as in Python). On disk a
ControlVector is a GGUF control vector (``export_gguf`` / ``import_gguf``): see
:mod:`misdirection.formats.gguf_cvec`, which reads and writes that file. This module converts in
memory; the object has no place for provenance, set sizes or reliability.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from misdirection.errors import ConfigError
from misdirection.formats.base import LayerVectors, dense

NAME = "repeng"
LAYER_MAP = "directions[k] is added to the output of model.layers[k] = our layer k"


def to_control_vector(
    directions: torch.Tensor,
    model_type: str,
    layers: list[int] | None = None,
) -> Any:
    """A ``repeng.ControlVector`` of our rows (all of them by default)."""
    try:
        from repeng import ControlVector
    except ImportError:
        raise ConfigError("repeng is not installed (pip install repeng)") from None
    chosen = range(directions.shape[0]) if layers is None else layers
    rows = {int(k): directions[k].numpy().astype(np.float32) for k in chosen}
    return ControlVector(model_type=model_type, directions=rows)


def from_control_vector(cv: Any, n_layers: int | None = None) -> LayerVectors:
    """Our rows from a ``repeng.ControlVector`` (negative layers need ``n_layers``)."""
    rows: dict[int, torch.Tensor] = {}
    items: Mapping[int, Any] = cv.directions
    for k, v in items.items():
        layer = int(k)
        if layer < 0:
            if n_layers is None:
                raise ConfigError(
                    f"the ControlVector names layer {layer}; give n_layers to resolve it"
                )
            layer += n_layers
        # a copy: repeng's arrays may be read-only, which torch warns about
        rows[layer] = torch.from_numpy(np.array(v, dtype=np.float32))
    meta = {
        "method": NAME,
        "model_hint": cv.model_type,
        "source_format": NAME,
        "source_layer_map": LAYER_MAP,
    }
    return LayerVectors(dense(rows, "ControlVector", n_layers), meta, tuple(sorted(rows)))
