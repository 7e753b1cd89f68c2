"""A direction set (one vector per layer) and its file format: the lowest layer of directions.

A direction set holds one vector per layer, ``directions[i]`` for layer ``i`` (layer ``i`` = output
of decoder block ``i``, 0-based; :data:`misdirection.models.LAYER_CONVENTION`).

File format (safetensors): tensor ``directions`` float32 [n_layers, d_model]; metadata str->str with
``format`` = ``misdirection.directions/1``, ``method``, ``model``, ``adapter``, ``layer_convention``,
``positions`` and method-specific keys whose values are JSON-encoded. ``.pt``/``.pth`` and ``.npy``
files with a [d] or [n_layers, d] tensor are read too.

Everything that reads, writes or compares direction sets (extraction, reliability, random controls,
interventions, geometry) imports it from here; nothing here imports them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from misdirection.errors import ConfigError, DataError, ShapeError, check_layer
from misdirection.models import LAYER_CONVENTION

DIRECTIONS_FORMAT = "misdirection.directions/1"
# Plain-string metadata keys; every other key is JSON-encoded.
_STR_KEYS = ("format", "method", "model", "adapter", "layer_convention", "positions")


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


#: What :func:`as_direction_set` accepts: a set, a [d] / [n_layers, d] tensor or array, or a file.
DirectionsLike = DirectionSet | torch.Tensor | np.ndarray | str | Path


def as_direction_set(obj: DirectionsLike) -> DirectionSet:
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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the source answers table of a direction)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mean_diff(misaligned: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
    """Per-layer mean(misaligned) - mean(aligned) of [n, n_layers, d] activations (float64 sums)."""
    if misaligned.shape[1:] != aligned.shape[1:]:
        raise ShapeError(
            f"activation sets differ in shape: misaligned {tuple(misaligned.shape)}, aligned {tuple(aligned.shape)}"
        )
    return (misaligned.double().mean(0) - aligned.double().mean(0)).float()


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
