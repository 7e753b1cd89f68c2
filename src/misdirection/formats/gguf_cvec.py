"""GGUF control vectors: the files llama.cpp's ``--control-vector`` reads and repeng's
``ControlVector.export_gguf`` writes.

Layout: ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (a model type,
e.g. ``llama``) and ``controlvector.layer_count`` (how many vectors), and one 1-D F32 tensor
``direction.<k>`` per layer. llama.cpp adds ``direction.<k>`` to the output of block ``k``
(0-based, after the block's last residual add) at every position, so ``k`` is our layer ``k``;
it rejects ``k = 0`` (block 0's output cannot be steered there) and reads no metadata. We add our
own keys under ``misdirection.*`` (layer convention, layer count, the full metadata as JSON), which
llama.cpp and repeng ignore, so nothing of ours is lost except layer 0.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from misdirection.errors import DataError, ShapeError
from misdirection.formats.base import (
    Format,
    LayerVectors,
    dense,
    from_str_metadata,
    to_str_metadata,
)

NAME = "gguf"
ARCH = "controlvector"
LAYER_MAP = (
    "direction.<k> is added by llama.cpp to the output of block k (0-based) = our layer k; "
    "k = 0 is not allowed"
)
MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def _field(reader: Any, key: str) -> Any:
    """A scalar or string field of a GGUF file, or None."""
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def model_shape(path: Path) -> tuple[int, int] | None:
    """(n_layers, d_model) of a GGUF *model* file from its metadata, without loading weights."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    blocks, width = (
        _field(reader, f"{arch}.block_count"),
        _field(reader, f"{arch}.embedding_length"),
    )
    if blocks is None or width is None:
        return None
    return int(blocks), int(width)


def read(path: Path) -> LayerVectors:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, struct.error, IndexError, KeyError) as exc:
        raise DataError(f"cannot read {path} as GGUF: {exc}") from None
    arch = _field(reader, "general.architecture")
    names = [t.name for t in reader.tensors]
    if arch != ARCH:
        blocks = _field(reader, f"{arch}.block_count")
        what = f"a {arch} model" + (f" with {blocks} blocks" if blocks is not None else "")
        raise DataError(
            f"{path} is {what} ({len(names)} tensors, e.g. {', '.join(names[:2])}), not a control "
            "vector (general.architecture 'controlvector', tensors direction.<layer>); pass a model "
            "file as the model, not as directions"
        )
    rows: dict[int, torch.Tensor] = {}
    for t in reader.tensors:
        head, _, tail = t.name.partition(".")
        if head != "direction" or not tail.lstrip("-").isdigit():
            raise DataError(
                f"{path}: tensor {t.name!r} is not named direction.<layer>; llama.cpp rejects the file"
            )
        if t.tensor_type.name != "F32" or len([s for s in t.shape if s != 1]) > 1:
            raise ShapeError(
                f"{path}: tensor {t.name} must be a 1-D F32 vector, got {t.tensor_type.name} "
                f"of shape {tuple(int(s) for s in t.shape)}"
            )
        layer = int(tail)
        if layer in rows:
            raise DataError(f"{path}: holds {t.name} twice")
        rows[layer] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    meta_text = _field(reader, "misdirection.metadata")
    n_layers = _field(reader, "misdirection.n_layers")
    metadata: dict[str, Any] = (
        from_str_metadata(meta_text, str(path)) if meta_text is not None else {"method": ARCH}
    )
    hint = _field(reader, f"{ARCH}.model_hint")
    if hint is not None and meta_text is None:
        metadata["model_hint"] = hint
    if 0 in rows:
        warnings.warn(
            f"{path}: holds direction.0, which llama.cpp refuses (it cannot steer block 0's "
            "output); read as our layer 0",
            stacklevel=2,
        )
    directions = dense(rows, str(path), None if n_layers is None else int(n_layers))
    metadata.update(source_format=NAME, source_layer_map=LAYER_MAP)
    return LayerVectors(directions, metadata, tuple(sorted(rows)))


def write(
    directions: torch.Tensor, metadata: Mapping[str, Any], path: Path, layer: int | None
) -> list[Path]:
    from gguf import GGUFWriter

    rows = range(directions.shape[0]) if layer is None else [layer]
    if 0 in rows:
        if layer == 0:
            raise DataError(
                "a GGUF control vector cannot hold layer 0: llama.cpp never steers block 0's "
                "output (choose a layer from 1)"
            )
        if directions.shape[0] > 1 and bool(directions[0].any()):
            warnings.warn(
                f"{path}: layer 0 (norm {float(directions[0].norm()):.4g}) is left out: llama.cpp "
                "cannot steer block 0's output, and a direction.0 tensor makes it reject the file",
                stacklevel=3,
            )
        rows = [r for r in rows if r != 0]
    meta = dict(metadata)
    writer = GGUFWriter(str(path), ARCH)
    hint = str(meta.get("model_type") or meta.get("model_hint") or meta.get("model") or "unknown")
    writer.add_string(f"{ARCH}.model_hint", hint)
    writer.add_uint32(f"{ARCH}.layer_count", len(rows))
    writer.add_string("misdirection.layer_convention", LAYER_MAP)
    writer.add_uint32("misdirection.n_layers", int(directions.shape[0]))
    writer.add_string("misdirection.metadata", to_str_metadata(meta))
    for k in rows:
        writer.add_tensor(f"direction.{k}", directions[k].numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return [path]


FORMAT = Format(
    name=NAME,
    description="GGUF control vector (llama.cpp --control-vector, repeng export_gguf)",
    layer_map=LAYER_MAP,
    suffixes=(".gguf",),
    read=read,
    write=write,
    carries_metadata=True,
)
