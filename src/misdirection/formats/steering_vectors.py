"""steering-vectors' ``SteeringVector``: ``layer_activations`` {layer: [d]} and a ``layer_type``.

With ``layer_type="decoder_block"`` (its default) the vector of layer ``k`` is added by a forward
hook to the output of the k-th decoder block, so ``k`` is our layer ``k``. Other layer types act on
an attention or MLP output, not on the residual stream after a block, and are refused.

The library has no file format of its own; its users ``torch.save`` either the object or its
``layer_activations``. We write, and read, a ``.pt`` dict that loads without unpickling code::

    {"layer_activations": {k: tensor[d]}, "layer_type": "decoder_block",
     "misdirection_metadata": "<our metadata as JSON>"}

so ``SteeringVector(d["layer_activations"], d["layer_type"])`` rebuilds it. A pickled
``SteeringVector`` and a bare ``{int: tensor}`` dict are read too (the former needs the package).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from misdirection.errors import ConfigError, DataError
from misdirection.formats.base import (
    TORCH_LOAD_ERRORS,
    Format,
    LayerVectors,
    dense,
    from_str_metadata,
    to_str_metadata,
)

NAME = "steering-vectors"
LAYER_MAP = (
    "layer_activations[k] (layer_type decoder_block) is added to block k's output = our layer k"
)
BLOCK = "decoder_block"


def _load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        if "steering_vectors" not in str(exc):
            raise DataError(
                f"cannot read {path} as a torch file: {str(exc).splitlines()[0]}"
            ) from None
    try:
        from steering_vectors import SteeringVector
    except ImportError:
        raise DataError(
            f"{path} holds a pickled steering_vectors.SteeringVector; install steering-vectors to "
            "read it, or save its layer_activations instead"
        ) from None
    # Only this one class is allowed to unpickle; nothing else in the file runs.
    with torch.serialization.safe_globals([SteeringVector]):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def looks_like(obj: Any) -> bool:
    if type(obj).__name__ == "SteeringVector":
        return True
    if isinstance(obj, Mapping):
        if "layer_activations" in obj:
            return True
        return bool(obj) and all(
            isinstance(k, int) and isinstance(v, torch.Tensor) and v.ndim == 1
            for k, v in obj.items()
        )
    return False


def from_object(obj: Any, where: str) -> LayerVectors:
    """LayerVectors from a SteeringVector, its saved dict, or a bare {layer: tensor} dict."""
    meta: dict[str, Any] = {"method": NAME}
    if type(obj).__name__ == "SteeringVector":
        acts, layer_type = obj.layer_activations, obj.layer_type
    elif isinstance(obj, Mapping) and "layer_activations" in obj:
        acts, layer_type = obj["layer_activations"], obj.get("layer_type", BLOCK)
        if isinstance(obj.get("misdirection_metadata"), str):
            meta = from_str_metadata(obj["misdirection_metadata"], where)
    else:
        acts, layer_type = obj, BLOCK
    if layer_type != BLOCK:
        raise DataError(
            f"{where}: its vectors have layer_type {layer_type!r}, which acts on that sub-layer's "
            f"output, not on the residual stream after a block (only {BLOCK!r} maps onto our layers)"
        )
    if not isinstance(acts, Mapping) or not all(isinstance(k, int) for k in acts):
        raise DataError(f"{where}: layer_activations must map integer layers to tensors")
    rows = {int(k): torch.as_tensor(v) for k, v in acts.items()}
    meta.update(source_format=NAME, source_layer_map=LAYER_MAP)
    return LayerVectors(dense(rows, where), meta, tuple(sorted(rows)))


def read(path: Path) -> LayerVectors:
    obj = _load(path)
    if not looks_like(obj):
        raise DataError(
            f"{path}: not a steering-vectors file (expected a SteeringVector or a dict with "
            f"'layer_activations'), found {type(obj).__name__}"
        )
    return from_object(obj, str(path))


def _rows(directions: torch.Tensor, layer: int | None) -> dict[int, torch.Tensor]:
    layers = range(directions.shape[0]) if layer is None else [layer]
    return {k: directions[k].clone() for k in layers}


def write(
    directions: torch.Tensor, metadata: Mapping[str, Any], path: Path, layer: int | None
) -> list[Path]:
    torch.save(
        {
            "layer_activations": _rows(directions, layer),
            "layer_type": BLOCK,
            "misdirection_metadata": to_str_metadata(metadata),
        },
        str(path),
    )
    return [path]


def to_steering_vector(directions: torch.Tensor, layers: list[int] | None = None) -> Any:
    """A ``steering_vectors.SteeringVector`` of our [n_layers, d] rows (all of them by default)."""
    try:
        from steering_vectors import SteeringVector
    except ImportError:
        raise ConfigError(
            "steering-vectors is not installed (pip install steering-vectors)"
        ) from None
    acts = {
        k: directions[k].clone() for k in (range(directions.shape[0]) if layers is None else layers)
    }
    return SteeringVector(layer_activations=acts, layer_type=BLOCK)


FORMAT = Format(
    name=NAME,
    description="steering-vectors SteeringVector (.pt: layer_activations, layer_type)",
    layer_map=LAYER_MAP,
    suffixes=(".pt", ".pth"),
    read=read,
    write=write,
    carries_metadata=True,
)
