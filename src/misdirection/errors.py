"""User-facing errors.

Every problem a user can cause (bad file, wrong layer, missing model, wrong shape) raises a
subclass of :class:`MisdirectionError` with one clear sentence. The CLI prints that sentence and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class MisdirectionError(Exception):
    """Base class of errors whose message is meant for the user, not a traceback."""


class ModelNotFoundError(MisdirectionError):
    """A model spec names nothing we can load (offline Hub id, missing folder, unknown alias)."""


class LayerIndexError(MisdirectionError, IndexError):
    """A layer index outside the model's valid range."""


class ShapeError(MisdirectionError, ValueError):
    """A tensor of the wrong shape (e.g. a direction of the wrong width)."""


class DataError(MisdirectionError, ValueError):
    """A malformed data file; the message names the file and line or field."""


class ConfigError(MisdirectionError, ValueError):
    """An invalid configuration; the message names the field."""


class JudgeError(MisdirectionError):
    """A judge backend cannot run (no API key, unreachable server, unknown rubric)."""


def check_layer(layer: int, n_layers: int, what: str = "layer") -> int:
    """Return ``layer`` if valid (negative indices count from the end), else raise one sentence."""
    if not isinstance(layer, int):
        raise LayerIndexError(f"{what} must be an integer, got {layer!r}")
    if -n_layers <= layer < n_layers:
        return layer % n_layers
    raise LayerIndexError(
        f"{what} {layer} is out of range: this model has {n_layers} layers (valid 0..{n_layers - 1})"
    )
