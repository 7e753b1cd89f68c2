"""Adapter scaling, an intervention: ``LAYERS=FACTOR`` strings (:func:`parse_adapter_scales`),
selectors resolved to the model's adapters (:func:`resolve_adapter_selection`) and
:class:`AdapterScaling`, which multiplies chosen adapters' peft ``scaling`` while active and
restores it exactly on exit (the intervention protocol of :mod:`misdirection.sample`)."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from misdirection.errors import ConfigError, LayerIndexError
from misdirection.intervention_registry import register_intervention
from misdirection.lora.adapters import (
    LoraAdapter,
    NoRankOneAdapterError,
    _view,
    find_lora_adapters,
)

_SCALE_RE = re.compile(r"^\s*([^=]+?)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_adapter_scales(items: Sequence[str]) -> dict[int | str, float]:
    """Parse ``LAYERS=FACTOR`` strings into an ordered {selector: factor} mapping.

    ``LAYERS`` is ``all``, a comma-separated list of layers and ranges (``15,16``, ``15-17``) or
    adapter labels (``L15.down_proj``). Later entries override earlier ones, so
    ``["all=0", "15=1"]`` silences every adapter but layer 15's. Example:
    ``parse_adapter_scales(["15,16=2.0", "all=0"])``.
    """
    out: dict[int | str, float] = {}
    for item in items:
        m = _SCALE_RE.match(item)
        if not m:
            raise ConfigError(
                f"adapter scale '{item}' is not of the form LAYERS=FACTOR "
                "(e.g. '15,16=2.0' or 'all=0')"
            )
        targets, factor = m.group(1), float(m.group(2))
        for tok in (t.strip() for t in targets.split(",")):
            if not tok:
                raise ConfigError(f"adapter scale '{item}' has an empty layer in its list")
            if tok.lower() == "all":
                key: int | str = "all"
                out.pop(key, None)
                out[key] = factor
            elif re.fullmatch(r"-?\d+", tok):
                out.pop(int(tok), None)
                out[int(tok)] = factor
            elif re.fullmatch(r"\d+-\d+", tok):
                lo, hi = (int(x) for x in tok.split("-"))
                if hi < lo:
                    raise ConfigError(f"adapter scale '{item}': range {tok} runs backwards")
                for layer in range(lo, hi + 1):
                    out.pop(layer, None)
                    out[layer] = factor
            else:
                out.pop(tok, None)
                out[tok] = factor
    return out


def resolve_adapter_selection(
    model: Any, selectors: Mapping[int | str, float] | Sequence[int | str], rank_one: bool = False
) -> dict[str, tuple[LoraAdapter, float]]:
    """Map selectors (layers, ``all``, labels, module names) to the model's adapters, in order.

    For a sequence (no factors) every factor is 1.0. Raises :class:`LayerIndexError` for a layer
    out of range or without an adapter, :class:`ConfigError` for an unknown label.
    """
    adapters = find_lora_adapters(model, rank_one=rank_one)
    if not adapters:
        raise NoRankOneAdapterError("the model has no active LoRA adapter to select")
    items = (
        list(selectors.items()) if isinstance(selectors, Mapping) else [(s, 1.0) for s in selectors]
    )
    n_layers = _view(model).n_layers
    layers_with = sorted({a.layer for a in adapters if a.layer is not None})
    chosen: dict[str, tuple[LoraAdapter, float]] = {}
    for sel, factor in items:
        if sel == "all":
            hits = adapters
        elif isinstance(sel, int):
            from misdirection.errors import check_layer

            layer = check_layer(sel, n_layers)
            hits = [a for a in adapters if a.layer == layer]
            if not hits:
                raise LayerIndexError(
                    f"layer {sel} has no LoRA adapter; "
                    f"adapters sit at layers {', '.join(map(str, layers_with))}"
                )
        else:
            hits = [
                a
                for a in adapters
                if sel in (a.label, a.module_name) or a.label.split("@")[0] == sel
            ]
            if not hits:
                raise ConfigError(
                    f"no adapter named '{sel}'; "
                    f"known adapters: {', '.join(a.label for a in adapters)}"
                )
        for a in hits:
            chosen.pop(a.label, None)
            chosen[a.label] = (a, float(factor))
    return chosen


@register_intervention
class AdapterScaling:
    """Scale chosen LoRA adapters' contributions by factors while active (others untouched).

    Multiplies PEFT's per-adapter ``scaling`` (the output is ``base(x) + scaling * B(A x)``), and
    restores the exact original values on exit. Factor 1 leaves the model bit-identical, factor 0
    gives the base model's output exactly. Follows the intervention protocol of
    :mod:`misdirection.sample`: ``spec()`` and ``apply(model)`` (a context manager)::

        with AdapterScaling({"all": 0.0, 15: 1.0}).apply(lm.model): ...
        AdapterScaling.from_strings(["15,16=2.0", "21-23=-1"])
    """

    kind = "scale-adapters"
    # Conditions and effects have said "adapter-scaling" since the first results files.
    condition_kind = "adapter-scaling"
    # Scaling an adapter moves along its own B vector: there is no random-direction counterpart.
    control_kind = None

    def __init__(self, scales: Mapping[int | str, float]) -> None:
        if not scales:
            raise ConfigError("adapter scaling needs at least one LAYERS=FACTOR entry")
        self.scales = dict(scales)
        for k, v in self.scales.items():
            if not math.isfinite(float(v)):
                raise ConfigError(f"adapter scale factor for {k} must be finite, got {v}")

    @classmethod
    def from_strings(cls, items: Sequence[str]) -> AdapterScaling:
        return cls(parse_adapter_scales(items))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "scales": {str(k): float(v) for k, v in self.scales.items()}}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> AdapterScaling:
        """Rebuild from :meth:`spec` (layer keys come back as ints)."""
        if spec.get("kind") != cls.kind:
            raise ConfigError(f"not an adapter-scaling spec: kind {spec.get('kind')!r}")
        scales = spec.get("scales")
        if not isinstance(scales, Mapping):
            raise ConfigError("an adapter-scaling spec needs a 'scales' object")
        return cls(
            {
                (int(k) if re.fullmatch(r"-?\d+", str(k)) else str(k)): float(v)
                for k, v in scales.items()
            }
        )

    @contextlib.contextmanager
    def apply(self, model: Any) -> Iterator[dict[str, float]]:
        """Scale while inside; yields {adapter label: factor} of what was changed."""
        chosen = resolve_adapter_selection(model, self.scales, rank_one=False)
        saved = [(a.module, a.peft_name, a.module.scaling[a.peft_name]) for a, _ in chosen.values()]
        try:
            for a, factor in chosen.values():
                a.module.scaling[a.peft_name] = a.module.scaling[a.peft_name] * factor
            yield {label: f for label, (_, f) in chosen.items()}
        finally:
            for module, name, value in saved:
                module.scaling[name] = value

    def __repr__(self) -> str:
        return f"AdapterScaling({self.scales!r})"
