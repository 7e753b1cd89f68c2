"""Direction files in the field's formats: recognise, read and write them in our layer convention.

Our own file (safetensors, :mod:`misdirection.directions`) is read and written there; this package
owns every *other* format, one module each, and a registry keyed by format name:

=================  =================================================================================
``gguf``           GGUF control vector (llama.cpp ``--control-vector``, repeng ``export_gguf``)
``steering-vectors`` steering-vectors ``SteeringVector`` saved as a ``.pt`` dict
``persona-vectors`` persona_vectors' per-layer tensor, row 0 = embeddings
``refusal-direction`` refusal_direction's ``direction.pt`` + ``direction_metadata.json``
``em-organisms``   model-organisms-for-EM per-layer vector list
=================  =================================================================================

repeng's in-memory ``ControlVector`` converts with :mod:`misdirection.formats.repeng`; its files
are GGUF. A path may name its format explicitly as ``FORMAT:PATH`` (``persona-vectors:x.pt``);
otherwise :func:`sniff` recognises it by content and name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from misdirection.errors import ConfigError, DataError
from misdirection.formats import gguf_cvec, layer_files, repeng, steering_vectors
from misdirection.formats.base import TORCH_LOAD_ERRORS, Format, LayerVectors

#: Our own format's name (read and written by :class:`misdirection.directions.DirectionSet`).
OURS = "misdirection"

FORMATS: dict[str, Format] = {
    f.name: f for f in (gguf_cvec.FORMAT, steering_vectors.FORMAT, *layer_files.FORMATS)
}

__all__ = [
    "gguf_cvec",
    "layer_files",
    "repeng",
    "steering_vectors",
    "FORMATS",
    "OURS",
    "Format",
    "LayerVectors",
    "names",
    "read_foreign",
    "sniff",
    "split_format",
    "write",
]


def names() -> list[str]:
    """Every format name, ours first."""
    return [OURS, *FORMATS]


def split_format(spec: str | Path) -> tuple[str | None, Path]:
    """``"persona-vectors:x.pt"`` -> ``("persona-vectors", Path("x.pt"))``; a plain path -> (None, it)."""
    text = str(spec)
    head, sep, tail = text.partition(":")
    if sep and head in (OURS, *FORMATS) and not Path(text).exists():
        return head, Path(tail)
    return None, Path(text)


def sniff(path: Path) -> str | None:
    """The foreign format of an existing file, or None for our own (or an unknown) file."""
    if not path.is_file():
        return None
    if gguf_cvec.is_gguf(path):
        return gguf_cvec.NAME
    if path.suffix.lower() not in (".pt", ".pth"):
        return None
    if path.name == "direction.pt" and path.with_name(layer_files.SIDECAR).is_file():
        return layer_files.REFUSAL
    if layer_files.PERSONA_NAME.fullmatch(path.name):
        return layer_files.PERSONA
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        return steering_vectors.NAME if "steering_vectors" in str(exc) else None
    if isinstance(obj, Mapping) and "directions" in obj:
        return None
    if steering_vectors.looks_like(obj):
        return steering_vectors.NAME
    if layer_files.looks_like_em(obj):
        return layer_files.EM
    return None


def get(name: str) -> Format:
    if name not in FORMATS:
        raise ConfigError(f"unknown direction format {name!r}; known: {', '.join(names())}")
    return FORMATS[name]


def read_foreign(
    spec: str | Path, format: str | None = None
) -> tuple[Path, LayerVectors | None, bool]:
    """Read ``spec`` if it is in a foreign format: (path, vectors or None for ours, re-readable).

    ``re-readable`` is False when the format was named explicitly but the bare path would not be
    recognised as it: a spec recording only the path could not read it back the same way.
    """
    named, path = split_format(spec)
    fmt = format or named
    if fmt == OURS:
        return path, None, True
    found = sniff(path)
    fmt = fmt or found
    if fmt is None:
        return path, None, True
    if not path.is_file():
        raise DataError(f"direction file {path} does not exist")
    return path, get(fmt).read(path), fmt == found


def write(
    directions: torch.Tensor,
    metadata: Mapping[str, Any],
    path: str | Path,
    format: str,
    layer: int | None = None,
) -> list[Path]:
    """Write [n_layers, d] rows (and what the format can keep of ``metadata``) to ``path``."""
    fmt = get(format)
    if directions.ndim != 2:
        raise DataError(f"expected [n_layers, d] directions, got {tuple(directions.shape)}")
    if layer is not None and not 0 <= layer < directions.shape[0]:
        raise DataError(
            f"layer {layer} is out of range: the directions have {directions.shape[0]} layers "
            f"(valid 0..{directions.shape[0] - 1})"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return fmt.write(directions.detach().to("cpu", torch.float32), metadata, path, layer)
