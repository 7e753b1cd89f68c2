"""Converting a direction file between our format and the field's (:mod:`misdirection.formats`).

:func:`convert` reads any supported file, optionally checks it against a model's files (before any
model loads), writes the target format, reads the result back and checks that every layer the
target carries holds the same values. Everything the target cannot carry is listed in
:attr:`Conversion.lost` (and was warned about when written).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from misdirection import formats
from misdirection.direction_set import DirectionSet
from misdirection.errors import ConfigError, DataError
from misdirection.model_shape import check_fits

#: Output suffixes that name one format; ``.pt`` is shared by several and needs ``to``.
_BY_SUFFIX = {".safetensors": formats.OURS, ".gguf": "gguf", ".npy": None}


@dataclass
class Conversion:
    """What a conversion did: formats, layers on each side, what was lost, and the check."""

    source: str
    source_format: str
    target_format: str
    written: list[str]
    layers_in: list[int]
    layers_out: list[int]
    layer_map_in: str
    layer_map_out: str
    lost: list[str] = field(default_factory=list)
    #: What reading the source said (layer-convention caveats, absent layers).
    notes: list[str] = field(default_factory=list)
    #: Read back, every written layer equals the source's row exactly.
    verified: bool = False


def target_format(out: Path, to: str | None) -> str:
    """The format to write: ``to``, else the one ``out``'s name implies."""
    if to is not None:
        if to != formats.OURS:
            formats.get(to)  # an unknown name fails here, listing the known ones
        return to
    if formats.layer_files.PERSONA_NAME.fullmatch(out.name):
        return formats.layer_files.PERSONA
    if out.name == "direction.pt":
        return formats.layer_files.REFUSAL
    found = _BY_SUFFIX.get(out.suffix.lower())
    if found is None:
        choices = ", ".join(n for n in formats.names() if n != "gguf")
        raise ConfigError(
            f"{out}: a {out.suffix or 'suffix-less'} file may be any of several formats; choose one "
            f"with --to ({choices}), or name it .safetensors (ours) or .gguf (control vector)"
        )
    return found


def _layer_map(fmt: str) -> str:
    from misdirection.models import LAYER_CONVENTION

    return LAYER_CONVENTION if fmt == formats.OURS else formats.get(fmt).layer_map


def convert(
    source: str | Path,
    out: str | Path,
    *,
    source_format: str | None = None,
    to: str | None = None,
    layer: int | None = None,
    model: str | None = None,
) -> Conversion:
    """Convert ``source`` to ``out`` (see the module docstring); ``layer`` keeps one layer only."""
    out = Path(out)
    fmt_out = target_format(out, to)
    named, src_path = formats.split_format(source)
    fmt_in = source_format or named or formats.sniff(src_path) or formats.OURS
    with warnings.catch_warnings(record=True) as caught_read:
        warnings.simplefilter("always")
        ds, layers_in = _read(src_path, fmt_in)
    notes = [str(w.message) for w in caught_read]
    if model is not None:
        check_fits(ds.directions, model, str(src_path), [layer] if layer is not None else None)
    if layer is not None and not 0 <= layer < ds.n_layers:
        raise DataError(
            f"{src_path}: layer {layer} is out of range: it holds {ds.n_layers} layers "
            f"(valid 0..{ds.n_layers - 1})"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if fmt_out == formats.OURS:
            kept = ds.directions if layer is None else _only(ds.directions, layer)
            meta = dict(ds.metadata, layer=layer) if layer is not None else dict(ds.metadata)
            written = [DirectionSet(kept, meta).save(out)]
        else:
            written = formats.write(ds.directions, ds.metadata, out, fmt_out, layer)
    lost = [str(w.message) for w in caught]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's notes on our own output repeat the above
        back, layers_out = _read(out, fmt_out)
    if layer is not None:
        layers_out = [layer]
    absent = sorted(set(range(back.n_layers)) - set(layers_in)) if fmt_out == formats.OURS else []
    if absent:
        notes.append(f"layers {absent} are not in {src_path}: zero rows in {out}")
    verified = all(
        k < ds.n_layers and k < back.n_layers and torch.equal(back.directions[k], ds.directions[k])
        for k in layers_out
    )
    if not verified:
        raise DataError(
            f"{out}: read back, its vectors differ from {src_path}'s (a bug: please report)"
        )
    return Conversion(
        source=str(src_path),
        source_format=fmt_in,
        target_format=fmt_out,
        written=[str(p) for p in written],
        layers_in=layers_in,
        layers_out=layers_out,
        layer_map_in=_layer_map(fmt_in),
        layer_map_out=_layer_map(fmt_out),
        lost=lost,
        notes=notes,
        verified=verified,
    )


def _read(path: Path, fmt: str) -> tuple[DirectionSet, list[int]]:
    """A file in a known format, and the layers it holds."""
    _, foreign, _ = formats.read_foreign(path, fmt)
    if foreign is None:
        ds = DirectionSet.load(path, formats.OURS)
        return ds, list(range(ds.n_layers))
    return DirectionSet(foreign.directions, foreign.metadata, str(path)), list(foreign.layers)


def _only(directions: torch.Tensor, layer: int) -> torch.Tensor:
    kept = torch.zeros_like(directions)
    kept[layer] = directions[layer]
    return kept
