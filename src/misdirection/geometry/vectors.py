"""Loading and validating the named vectors that the geometry suite compares.

A vector spec on the command line is ``PATH`` (named by the file name without its last suffix)
or ``NAME=PATH``. Accepted files: our direction files (safetensors with a ``directions`` tensor
[n_layers, d]), any ``.safetensors`` / ``.pt`` / ``.npy`` file holding a single [d] or
[n_layers, d] tensor. From a [n_layers, d] tensor one row is picked with ``layer`` (layer i =
output of decoder block i).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from misdirection.errors import DataError, LayerIndexError, ShapeError, check_layer

SUFFIXES = (".safetensors", ".pt", ".pth", ".npy")


@dataclass
class LoadedVector:
    """One vector read from a file, with where it came from."""

    name: str
    vector: np.ndarray
    path: str
    layer: int | None
    metadata: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> tuple[str, Path]:
    """Split ``NAME=PATH`` (or a bare ``PATH``, named by its stem) into (name, path)."""
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        if not name or not path:
            raise DataError(f"vector spec {spec!r} must be PATH or NAME=PATH")
        return name, Path(path)
    path = Path(spec)
    return path.stem, path


def _read_safetensors(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            meta = dict(f.metadata() or {})
            if "directions" in keys:
                key = "directions"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise DataError(
                    f"{path}: holds tensors {keys}; expected a 'directions' tensor or a single tensor"
                )
            # Through torch so bfloat16/float16 files load too (numpy has no bfloat16).
            return f.get_tensor(key).float().numpy(), meta
    except DataError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from exc


def _read_torch(path: Path) -> np.ndarray:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable torch file ({exc})") from exc
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if "directions" in tensors:
            obj = tensors["directions"]
        elif len(tensors) == 1:
            obj = next(iter(tensors.values()))
        else:
            raise DataError(
                f"{path}: holds {sorted(tensors)}; expected a 'directions' tensor or a single tensor"
            )
    if not isinstance(obj, torch.Tensor):
        raise DataError(f"{path}: expected a tensor, found {type(obj).__name__}")
    return obj.detach().float().numpy()


def read_array(path: str | Path) -> tuple[np.ndarray, dict[str, str]]:
    """Read the single tensor of a vector file as float64, with its metadata (safetensors only)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    meta: dict[str, str] = {}
    if suffix == ".safetensors":
        arr, meta = _read_safetensors(path)
    elif suffix in (".pt", ".pth"):
        arr = _read_torch(path)
    elif suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
    else:
        raise DataError(
            f"{path}: unsupported file type {suffix!r} (use one of {', '.join(SUFFIXES)})"
        )
    return np.asarray(arr, dtype=np.float64), meta


def pick_layer(arr: np.ndarray, layer: int | None, source: str) -> tuple[np.ndarray, int | None]:
    """Return the vector of ``arr`` ([d] as is, [n_layers, d] at ``layer``) and the layer used."""
    if arr.ndim == 1:
        return arr, None
    if arr.ndim != 2:
        raise ShapeError(
            f"{source}: expected a [d] or [n_layers, d] tensor, got shape {list(arr.shape)}"
        )
    n_layers = arr.shape[0]
    if layer is None:
        if n_layers == 1:
            return arr[0], 0
        raise LayerIndexError(
            f"{source}: holds {n_layers} layers; choose one with --layer (valid 0..{n_layers - 1})"
        )
    idx = check_layer(layer, n_layers, what=f"layer for {source}")
    return arr[idx], idx


def load_vector(spec: str, layer: int | None = None) -> LoadedVector:
    """Load one named vector from ``PATH`` or ``NAME=PATH`` (see module docstring)."""
    name, path = parse_spec(spec)
    arr, meta = read_array(path)
    vec, used = pick_layer(arr, layer, str(path))
    return LoadedVector(name=name, vector=vec, path=str(path), layer=used, metadata=meta)


def load_vectors(specs: Sequence[str], layer: int | None = None) -> dict[str, LoadedVector]:
    """Load several named vectors; names must be unique (use NAME=PATH to disambiguate)."""
    out: dict[str, LoadedVector] = {}
    for spec in specs:
        loaded = load_vector(spec, layer)
        if loaded.name in out:
            raise DataError(
                f"two vectors are named {loaded.name!r} ({out[loaded.name].path} and {loaded.path}); "
                "name them with NAME=PATH"
            )
        out[loaded.name] = loaded
    return out


def validate_vectors(vectors: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Check named vectors and stack them to a float64 [n, d] matrix.

    Raises ShapeError for an empty set, a non-1-D vector or mismatched widths, and DataError for a
    non-finite or zero vector (a zero vector has no direction, so every cosine would be undefined).
    """
    if len(vectors) == 0:
        raise ShapeError("no vectors given: the geometry suite needs at least 2")
    names = [str(n) for n in vectors]
    rows = []
    width = None
    first = None
    for name, vec in vectors.items():
        arr = np.asarray(vec, dtype=np.float64)
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.reshape(-1)
        if arr.ndim != 1:
            raise ShapeError(
                f"vector {name!r} has shape {list(arr.shape)}; expected [d] (pick a layer first)"
            )
        if width is None:
            width, first = arr.shape[0], name
        elif arr.shape[0] != width:
            raise ShapeError(
                f"vector {name!r} has width {arr.shape[0]} but {first!r} has width {width}; "
                "all vectors must come from the same residual stream"
            )
        if not np.all(np.isfinite(arr)):
            raise DataError(f"vector {name!r} contains NaN or infinite values")
        if not np.any(arr):
            raise DataError(f"vector {name!r} is all zeros and has no direction")
        rows.append(arr)
    return names, np.vstack(rows)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit length (rows must be non-zero; see validate_vectors)."""
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def load_clusters(path: str | Path) -> dict[str, list[str]]:
    """Read a clusters file: YAML or JSON mapping cluster name -> list of vector names."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such clusters file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a mapping of cluster name -> list of vector names")
    out: dict[str, list[str]] = {}
    for name, members in data.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise DataError(f"{path}: cluster {name!r} must be a list of vector names")
        out[str(name)] = members
    return out


def _pick_sample_layer(arr: np.ndarray, layer: int | None, source: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3:
        if layer is None:
            raise LayerIndexError(
                f"{source}: activations hold {arr.shape[1]} layers; choose one with --layer"
            )
        return arr[:, check_layer(layer, arr.shape[1], what=f"layer for {source}"), :]
    raise ShapeError(
        f"{source}: expected activations [m, d] or [m, n_layers, d], got {list(arr.shape)}"
    )


def load_samples(
    spec: str, layer: int | None = None
) -> tuple[str, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Per-answer activations behind a vector, from ``NAME=PATH``.

    PATH is a ``.npy`` array [m, d] (the vector is its mean) or a ``.safetensors`` / ``.pt`` file
    with tensors ``misaligned`` and ``aligned`` (the vector is the difference of their means) or
    a single tensor. Arrays [m, n_layers, d] are cut at ``layer``.
    """
    if "=" not in spec:
        raise DataError(f"samples spec {spec!r} must be NAME=PATH")
    name, _, raw = spec.partition("=")
    path = Path(raw)
    if not path.is_file():
        raise DataError(f"{path}: no such samples file")
    suffix = path.suffix.lower()
    tensors: dict[str, np.ndarray] = {}
    if suffix == ".npy":
        tensors["x"] = np.load(path, allow_pickle=False)
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k).float().numpy() for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    elif suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        obj = obj if isinstance(obj, Mapping) else {"x": obj}
        tensors = {k: v.float().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}
    else:
        raise DataError(f"{path}: samples must be .npy, .safetensors or .pt")
    tensors = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    if {"misaligned", "aligned"} <= set(tensors):
        return name, (
            _pick_sample_layer(tensors["misaligned"], layer, str(path)),
            _pick_sample_layer(tensors["aligned"], layer, str(path)),
        )
    if len(tensors) == 1:
        return name, _pick_sample_layer(next(iter(tensors.values())), layer, str(path))
    raise DataError(
        f"{path}: expected tensors 'misaligned' and 'aligned' or a single tensor, "
        f"found {sorted(tensors)}"
    )
