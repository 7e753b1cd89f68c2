"""Plain tensor files of three research codebases, whose layer indices differ from ours.

* **persona_vectors** (``<trait>_response_avg_diff.pt`` and its ``prompt_avg`` / ``prompt_last``
  siblings): one tensor [n_layers + 1, d] indexed like Hugging Face ``hidden_states``: row 0 is the
  embedding output, row ``r`` the output of block ``r - 1`` (their steering adds row ``r`` at
  ``model.layers[r - 1]``). Row ``r`` is our layer ``r - 1``; row 0 has no counterpart. HF's last
  hidden state is taken after the final norm, ours before it.
* **refusal_direction** (``direction.pt`` beside ``direction_metadata.json`` = ``{"pos", "layer"}``):
  one vector [d], read at the *input* of block ``layer`` (a pre-hook), i.e. the output of block
  ``layer - 1``: our layer ``layer - 1``.
* **model-organisms-for-EM** (the steering code's mean-diff vectors): a list of [d] tensors, item
  ``i`` read by a forward hook on ``model.model.layers[i]``: our layer ``i`` (also read: a dict
  ``{"layer_<i>": tensor}`` as its activation collection keeps them).

None of these files has room for metadata except the refusal_direction sidecar, where we keep ours
under ``"misdirection"``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from misdirection.errors import ConfigError, DataError, LayerIndexError, ShapeError
from misdirection.formats.base import (
    Format,
    LayerVectors,
    dense,
    load_pt,
    warn_lost,
)

# ----------------------------------------------------------------------------------------------
# persona_vectors

PERSONA = "persona-vectors"
PERSONA_MAP = (
    "row r = HF hidden_states[r] = output of block r-1 = our layer r-1; row 0 = embeddings"
)
PERSONA_NAME = re.compile(r".*_(response_avg|prompt_avg|prompt_last)_diff\.pt$")


def read_persona(path: Path) -> LayerVectors:
    obj = load_pt(path)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2 or obj.shape[0] < 2:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise ShapeError(
            f"{path}: a persona_vectors file holds one [n_layers + 1, d] tensor (row 0 = "
            f"embeddings), found {shape}"
        )
    rows = obj.float()
    n = rows.shape[0] - 1
    if bool(rows[0].any()):
        warnings.warn(
            f"{path}: row 0 (the embedding output, norm {float(rows[0].norm()):.4g}) has no "
            "counterpart among block outputs and is dropped",
            stacklevel=2,
        )
    warnings.warn(
        f"{path}: its last row (HF hidden_states[{n}]) is taken after the model's final norm; read "
        f"as our layer {n - 1}, which is the block output before that norm",
        stacklevel=2,
    )
    meta = {"method": PERSONA, "source_format": PERSONA, "source_layer_map": PERSONA_MAP}
    return LayerVectors(rows[1:], meta)


def write_persona(
    directions: torch.Tensor, metadata: Mapping[str, Any], path: Path, layer: int | None
) -> list[Path]:
    warn_lost(
        PERSONA,
        path,
        metadata,
        [
            "row 0 (the embedding output: written as zeros)",
            f"the final-norm basis of row {directions.shape[0]} (ours is before the final norm)",
        ],
    )
    out = torch.zeros(directions.shape[0] + 1, directions.shape[1])
    if layer is None:
        out[1:] = directions
    else:
        out[layer + 1] = directions[layer]
    torch.save(out, str(path))
    return [path]


# ----------------------------------------------------------------------------------------------
# refusal_direction

REFUSAL = "refusal-direction"
REFUSAL_MAP = (
    "direction_metadata.json 'layer' L = input of block L = output of block L-1 = our layer L-1"
)
SIDECAR = "direction_metadata.json"


def read_refusal(path: Path) -> LayerVectors:
    sidecar = path.with_name(SIDECAR)
    if not sidecar.is_file():
        raise DataError(
            f"{path}: a refusal_direction file needs {SIDECAR} beside it (its 'layer' says where "
            "the direction was read)"
        )
    try:
        info = json.loads(sidecar.read_text())
        layer = int(info["layer"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{sidecar}: needs an integer field 'layer' ({exc})") from None
    obj = load_pt(path)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 1:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise ShapeError(f"{path}: a refusal_direction file holds one [d] tensor, found {shape}")
    if layer < 1:
        raise LayerIndexError(
            f"{sidecar}: layer {layer} is the input of block {layer}, the embedding output, which "
            "is not a block output (our layers start at block 0's output)"
        )
    meta: dict[str, Any] = dict(info.get("misdirection") or {"method": REFUSAL})
    meta.update(
        source_format=REFUSAL,
        source_layer_map=REFUSAL_MAP,
        refusal_pos=info.get("pos"),
        layer=layer - 1,
    )
    return LayerVectors(dense({layer - 1: obj}, str(path)), meta, (layer - 1,))


def write_refusal(
    directions: torch.Tensor, metadata: Mapping[str, Any], path: Path, layer: int | None
) -> list[Path]:
    if layer is None:
        if directions.shape[0] != 1:
            raise ConfigError(
                f"a refusal_direction file holds one layer; choose one of the {directions.shape[0]} "
                "with --layer"
            )
        layer = int(metadata.get("layer", 0))
    if path.name != "direction.pt":
        raise ConfigError(f"refusal_direction's file is named direction.pt, not {path.name}")
    n = directions.shape[0]
    others = n - 1
    if others:
        warnings.warn(
            f"{path}: holds layer {layer} only; the other {others} layers are left out",
            stacklevel=3,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(directions[layer if n > 1 else 0].clone(), str(path))
    sidecar = path.with_name(SIDECAR)
    # 'pos' is the token position refusal_direction read at; ours are means over positions.
    info = {"pos": None, "layer": layer + 1, "misdirection": dict(metadata, layer=layer)}
    sidecar.write_text(json.dumps(info, indent=2, default=str) + "\n")
    return [path, sidecar]


# ----------------------------------------------------------------------------------------------
# model-organisms-for-EM

EM = "em-organisms"
EM_MAP = "item i (hook on model.model.layers[i]) = output of block i = our layer i"
_EM_KEY = re.compile(r"layer_(\d+)")


def looks_like_em(obj: Any) -> bool:
    if isinstance(obj, (list, tuple)):
        return bool(obj) and all(isinstance(v, torch.Tensor) and v.ndim == 1 for v in obj)
    if isinstance(obj, Mapping):
        return bool(obj) and all(isinstance(k, str) and _EM_KEY.fullmatch(k) for k in obj)
    return False


def from_em_object(obj: Any, where: str) -> LayerVectors:
    if isinstance(obj, Mapping):
        rows = {int(_EM_KEY.fullmatch(k).group(1)): torch.as_tensor(v) for k, v in obj.items()}  # type: ignore[union-attr]
    else:
        rows = dict(enumerate(obj))
    bad = {k: tuple(v.shape) for k, v in rows.items() if v.ndim != 1}
    if bad:
        raise ShapeError(f"{where}: each layer must hold a [d] vector; layers {bad} do not")
    meta = {"method": EM, "source_format": EM, "source_layer_map": EM_MAP}
    return LayerVectors(dense(rows, where), meta, tuple(sorted(rows)))


def read_em(path: Path) -> LayerVectors:
    obj = load_pt(path)
    if not looks_like_em(obj):
        raise DataError(
            f"{path}: a model-organisms-for-EM vector file holds a list of [d] tensors (one per "
            f"layer) or a dict of 'layer_<i>' tensors, found {type(obj).__name__}"
        )
    return from_em_object(obj, str(path))


def write_em(
    directions: torch.Tensor, metadata: Mapping[str, Any], path: Path, layer: int | None
) -> list[Path]:
    warn_lost(EM, path, metadata)
    keep = range(directions.shape[0]) if layer is None else [layer]
    rows = [
        directions[k].clone() if k in keep else torch.zeros_like(directions[k])
        for k in range(directions.shape[0])
    ]
    torch.save(rows, str(path))
    return [path]


FORMATS = (
    Format(PERSONA, "persona_vectors per-layer tensor [n_layers + 1, d]", PERSONA_MAP, (".pt",),
           read_persona, write_persona),
    Format(REFUSAL, "refusal_direction direction.pt + direction_metadata.json", REFUSAL_MAP,
           (".pt",), read_refusal, write_refusal, carries_metadata=True),
    Format(EM, "model-organisms-for-EM per-layer vectors (list of [d] tensors)", EM_MAP, (".pt",),
           read_em, write_em),
)  # fmt: skip
