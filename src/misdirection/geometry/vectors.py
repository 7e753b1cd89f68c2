"""Loading the named vectors that the geometry suite compares, and the files that describe them.

A vector spec on the command line is ``PATH``, ``NAME=PATH``, ``PATH@LAYER`` or ``NAME=PATH@LAYER``
(named by the file name without its last suffix when no NAME is given; ``@best`` takes the layer
from a layer table). A vectors file (YAML list) holds the same per entry: ``name``, ``path``,
``layer`` (int or ``best``) and optionally ``base`` (the base model's direction file, for the
base-similarity figure); paths are relative to the list's folder.

Direction files are read by :meth:`misdirection.directions.DirectionSet.load` (one reader for
the format): our direction files, the field's formats (:mod:`misdirection.formats`; ``FORMAT:PATH``
names one), or any ``.safetensors`` / ``.pt`` / ``.npy`` file holding one [d] or [n_layers, d] tensor. From [n_layers, d] one row is picked (layer i = output of decoder
block i); a file with one vector is that vector at whatever layer it was taken.

Which layer a vector uses, first match wins: its own ``@LAYER``; its entry in the layer table
(``@best`` requires one); ``--layer``; the only row of a one-vector file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from misdirection.errors import ConfigError, DataError, LayerIndexError, ShapeError, check_layer

SUFFIXES = (".safetensors", ".pt", ".pth", ".npy", ".gguf")
BEST = "best"


@dataclass(frozen=True)
class VectorSpec:
    """Where one named vector comes from: a file, an optional layer (int or ``"best"``) and an
    optional base-model direction file."""

    name: str
    path: Path
    layer: int | str | None = None
    base: Path | None = None


@dataclass
class LoadedVector:
    """One vector read from a file, with where it came from.

    ``stack`` is every layer of the file [n_layers, d] (one row for a one-vector file), kept for
    layer-wise traces; ``layer`` is the row used (None for a one-vector file without a layer).
    """

    name: str
    vector: np.ndarray
    path: str
    layer: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    stack: np.ndarray | None = None
    layer_from: str = ""


def _split_layer(text: str) -> tuple[str, int | str | None]:
    """``"x.npy@12"`` -> ``("x.npy", 12)``; ``"x@best"`` -> ``("x", "best")``; no @ -> None."""
    body, at, tail = text.rpartition("@")
    if not at or Path(text).exists():
        return text, None
    if tail == BEST:
        return body, BEST
    try:
        return body, int(tail)
    except ValueError:
        raise ConfigError(
            f"vector spec {text!r}: the part after '@' must be a layer number or 'best', got {tail!r}"
        ) from None


def parse_spec(spec: str) -> VectorSpec:
    """Parse ``[NAME=]PATH[@LAYER]`` (see the module docstring)."""
    text, layer = _split_layer(spec)
    if "=" in text and not Path(text).exists():
        name, _, file = text.partition("=")
        if not name or not file:
            raise DataError(f"vector spec {spec!r} must be PATH or NAME=PATH (optionally @LAYER)")
        return VectorSpec(name, Path(file), layer)
    path = Path(text)
    return VectorSpec(path.stem, path, layer)


def read_vectors_file(path: str | Path) -> list[VectorSpec]:
    """Read a YAML (or JSON) list of ``{name, path, layer, base}`` entries."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such vectors file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a list of entries with name, path and optional layer")
    root = path.parent
    out = []
    for k, entry in enumerate(data):
        where = f"{path}: entry {k + 1}"
        if not isinstance(entry, Mapping) or "path" not in entry:
            raise DataError(f"{where} must be a mapping with at least 'path', got {entry!r}")
        unknown = set(entry) - {"name", "path", "layer", "base"}
        if unknown:
            raise DataError(
                f"{where} has unknown keys {sorted(unknown)} (use name, path, layer, base)"
            )
        file = root / str(entry["path"])
        layer = entry.get("layer")
        if (
            layer is not None
            and layer != BEST
            and (isinstance(layer, bool) or not isinstance(layer, int))
        ):
            raise DataError(f"{where}: layer must be an integer or 'best', got {layer!r}")
        base = root / str(entry["base"]) if entry.get("base") else None
        out.append(VectorSpec(str(entry.get("name") or file.stem), file, layer, base))
    return out


def _read_chosen(path: Path) -> int:
    """The layer chosen by a layer sweep (``chosen.json`` of ``misdirection select-layer``)."""
    if path.is_dir():
        path = path / "chosen.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable layer-selection result ({exc})") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("layer"), int):
        raise DataError(f"{path}: a layer-selection result needs an integer 'layer' field")
    return int(data["layer"])


def load_layer_table(path: str | Path) -> dict[str, int]:
    """Best layer per vector name, from a layer-selection table.

    Accepted: a CSV with columns ``name`` and ``layer`` (several rows per name: the row with the
    largest ``score`` wins, ties to the lower layer); a YAML/JSON mapping name -> layer, or
    name -> a ``misdirection select-layer`` output (its ``chosen.json`` or folder, relative to the
    table's folder).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such layer table")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"name", "layer"} <= set(rows[0]):
            raise DataError(f"{path}: a layer table CSV needs columns 'name' and 'layer'")
        best: dict[str, tuple[float, int]] = {}
        for line, row in enumerate(rows, start=2):
            try:
                layer = int(row["layer"])
                score = float(row["score"]) if row.get("score") not in (None, "") else 0.0
            except ValueError:
                raise DataError(
                    f"{path}: line {line}: layer must be an integer and score a number"
                ) from None
            key = (score, -layer)
            if row["name"] not in best or key > (best[row["name"]][0], -best[row["name"]][1]):
                best[row["name"]] = (score, layer)
        return {name: layer for name, (_, layer) in best.items()}
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: expected a mapping of vector name -> layer (or chosen.json path)")
    out: dict[str, int] = {}
    for name, value in data.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[str(name)] = value
        elif isinstance(value, str):
            out[str(name)] = _read_chosen(path.parent / value)
        else:
            raise DataError(f"{path}: entry {name!r} must be a layer number or a chosen.json path")
    return out


def read_stack(path: str | Path) -> tuple[np.ndarray, dict[str, str]]:
    """Every layer of a direction file as float64 [n_layers, d], with its string metadata."""
    from misdirection.direction_set import DirectionSet
    from misdirection.formats import split_format

    fmt, file = split_format(path)
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    if fmt is None and file.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{file}: unsupported file type {file.suffix!r} (use one of {', '.join(SUFFIXES)}, "
            "or name the format as FORMAT:PATH)"
        )
    ds = DirectionSet.load(path)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in ds.metadata.items()}
    return ds.directions.numpy().astype(np.float64), meta


def pick_layer(stack: np.ndarray, layer: int | None, source: str) -> tuple[np.ndarray, int | None]:
    """The row of ``stack`` [n_layers, d] at ``layer`` (a one-row stack is its vector at any
    layer, recorded as ``layer``) and the layer used."""
    n_layers = stack.shape[0]
    if n_layers == 1:
        return stack[0], layer
    if layer is None:
        raise LayerIndexError(
            f"{source}: holds {n_layers} layers; choose one with --layer, {source}@LAYER or a "
            f"layer table (valid 0..{n_layers - 1})"
        )
    idx = check_layer(layer, n_layers, what=f"layer for {source}")
    return stack[idx], idx


def resolve_layer(
    spec: VectorSpec, default: int | None, table: Mapping[str, int] | None
) -> tuple[int | None, str]:
    """The layer a spec asks for and where that choice came from (see the module docstring)."""
    if isinstance(spec.layer, int):
        return spec.layer, "spec"
    if table is not None and spec.name in table:
        return int(table[spec.name]), "layer table"
    if spec.layer == BEST:
        raise ConfigError(
            f"vector {spec.name!r} asks for its best layer (@best) but "
            + (
                "the layer table has no entry for it"
                if table is not None
                else "no --layer-table was given"
            )
        )
    return default, "--layer" if default is not None else ""


def load_spec(
    spec: VectorSpec, layer: int | None = None, table: Mapping[str, int] | None = None
) -> LoadedVector:
    """Load one vector spec at its layer (see :func:`resolve_layer`)."""
    stack, meta = read_stack(spec.path)
    want, origin = resolve_layer(spec, layer, table)
    vec, used = pick_layer(stack, want, str(spec.path))
    return LoadedVector(
        name=spec.name,
        vector=vec,
        path=str(spec.path),
        layer=used,
        metadata=meta,
        stack=stack,
        layer_from=origin if used is not None else "",
    )


def load_vector(spec: str, layer: int | None = None) -> LoadedVector:
    """Load one named vector from ``[NAME=]PATH[@LAYER]`` (see module docstring)."""
    return load_spec(parse_spec(spec), layer)


def load_vectors(
    specs: Sequence[str | VectorSpec],
    layer: int | None = None,
    layer_table: Mapping[str, int] | None = None,
) -> dict[str, LoadedVector]:
    """Load several named vectors; names must be unique (use NAME=PATH to disambiguate)."""
    out: dict[str, LoadedVector] = {}
    for spec in specs:
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        if parsed.name in out:
            raise DataError(
                f"two vectors are named {parsed.name!r} ({out[parsed.name].path} and {parsed.path}); "
                "name them with NAME=PATH"
            )
        out[parsed.name] = load_spec(parsed, layer, layer_table)
    if layer_table is not None:
        unused = sorted(set(layer_table) - set(out))
        if unused:
            raise ConfigError(
                f"the layer table names vectors that were not given: {unused}; given: {list(out)}"
            )
    return out


def load_bases(
    specs: Sequence[str], names: Sequence[str], extra: Mapping[str, Path] | None = None
) -> dict[str, np.ndarray]:
    """Base-model direction stacks per vector name, from ``FILE`` (every vector) or ``NAME=FILE``
    specs, plus ``extra`` (name -> file, from a vectors list). Unknown names raise ConfigError."""
    out: dict[str, np.ndarray] = {}
    for raw in specs:
        if "=" in raw and not Path(raw).exists():
            name, _, file = raw.partition("=")
            if name not in names:
                raise ConfigError(
                    f"--base names unknown vector {name!r}; known: {', '.join(names)}"
                )
            out[name] = read_stack(file)[0]
        else:
            stack = read_stack(raw)[0]
            for n in names:
                out.setdefault(n, stack)
    for name, extra_file in (extra or {}).items():
        out[name] = read_stack(extra_file)[0]
    return out


@dataclass
class Groupings:
    """What a clusters file says: disjoint ``clusters`` (vector families compared by the tests),
    ``groups`` (lab or training procedure, for the base-similarity figure) and ``triplets``
    (named sets of three for the own-mean residual test and per-triplet SVD)."""

    clusters: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    triplets: list[list[str]] = field(default_factory=list)


def _name_lists(data: Any, path: Path, what: str) -> dict[str, list[str]]:
    if not isinstance(data, Mapping) or not data:
        raise DataError(f"{path}: {what} must be a mapping of name -> list of vector names")
    out: dict[str, list[str]] = {}
    for name, members in data.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise DataError(f"{path}: {what[:-1]} {name!r} must be a list of vector names")
        out[str(name)] = members
    return out


def load_groupings(path: str | Path) -> Groupings:
    """Read a clusters file (YAML or JSON).

    Either a plain mapping cluster name -> list of vector names, or a mapping with any of the keys
    ``clusters`` (that mapping), ``groups`` (group name -> vector names) and ``triplets`` (a list
    of three-name lists).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such clusters file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, Mapping) or not data:
        raise DataError(f"{path}: expected a mapping of cluster name -> list of vector names")
    sections = {"clusters", "groups", "triplets"}
    structured = set(data) <= sections and any(
        not isinstance(v, list) or (v and not isinstance(v[0], str)) for v in data.values()
    )
    if not structured:
        return Groupings(clusters=_name_lists(data, path, "clusters"))
    g = Groupings()
    if "clusters" in data:
        g.clusters = _name_lists(data["clusters"], path, "clusters")
    if "groups" in data:
        g.groups = _name_lists(data["groups"], path, "groups")
    for k, t in enumerate(data.get("triplets") or []):
        if not isinstance(t, list) or len(t) != 3 or not all(isinstance(m, str) for m in t):
            raise DataError(
                f"{path}: triplet {k + 1} must be a list of three vector names, got {t!r}"
            )
        g.triplets.append(list(t))
    return g


def load_clusters(path: str | Path) -> dict[str, list[str]]:
    """The clusters of a clusters file (see :func:`load_groupings`)."""
    return load_groupings(path).clusters


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
