"""Finding the LoRA adapters of a model: :class:`LoraAdapter` (where one adapter sits, its
``scaling``, ``A``, ``B`` and its rank-1 ``a``/``b`` vectors) and :func:`find_lora_adapters`, which
lists a (peft-wrapped) model's active adapters in layer order and names them ``L{layer}.{module}``
with the project's layer convention (layer i = decoder block i, 0-based; ``@peft_name`` appended
when several PEFT adapters are loaded at once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from misdirection.errors import ConfigError, MisdirectionError


class NoRankOneAdapterError(MisdirectionError):
    """The model carries no (active) rank-1 LoRA adapter."""


@dataclass
class LoraAdapter:
    """One LoRA adapter on one module: where it sits and handles to its weights."""

    label: str  #: ``L{layer}.{module}`` (``@peft_name`` appended when several PEFT adapters exist)
    module_name: (
        str  #: qualified name inside the unwrapped model, e.g. ``model.layers.15.mlp.down_proj``
    )
    peft_name: str  #: PEFT adapter name (``default``, ``adapter0``, ...)
    layer: int | None  #: decoder block index, None for modules outside the blocks
    rank: int
    module: Any = field(repr=False)  #: the peft LoRA layer

    @property
    def scaling(self) -> float:
        return float(self.module.scaling[self.peft_name])

    @property
    def A(self) -> Any:
        """``lora_A`` weight, shape [rank, d_in]."""
        return self.module.lora_A[self.peft_name].weight

    @property
    def B(self) -> Any:
        """``lora_B`` weight, shape [d_out, rank]."""
        return self.module.lora_B[self.peft_name].weight

    def b_vector(self) -> Any:
        """The direction this rank-1 adapter writes: ``B[:, 0]`` as float32 [d_out]."""
        return self.B.detach()[:, 0].float()

    def a_vector(self) -> Any:
        """The direction this rank-1 adapter reads: ``A[0]`` as float32 [d_in]."""
        return self.A.detach()[0].float()


def _view(model: Any) -> Any:
    """ModelView of a LoadedModel, a ModelView or any (peft-wrapped) HF causal LM."""
    from misdirection.hooks import view_of

    return view_of(model)


def _layer_of(module_name: str, block_prefixes: Sequence[str]) -> int | None:
    for i, prefix in enumerate(block_prefixes):
        if module_name.startswith(prefix + "."):
            return i
    return None


def find_lora_adapters(model: Any, rank_one: bool = True) -> list[LoraAdapter]:
    """Every active LoRA adapter of ``model`` (rank-1 only by default), ordered by layer.

    Raises :class:`NoRankOneAdapterError` when ``rank_one`` and none is found (the message says what
    the model does carry), and :class:`ConfigError` for merged adapters or variants (DoRA) whose
    output is not ``scaling * B (A x)``.
    """
    from peft.tuners.lora import LoraLayer

    view = _view(model)
    prefixes = [view.block_name(i) for i in range(view.n_layers)]
    found: list[LoraAdapter] = []
    other_ranks: set[int] = set()
    for name, module in view.base.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not hasattr(module, "lora_A") or len(module.lora_A) == 0:
            continue
        layer = _layer_of(name, prefixes)
        for peft_name in module.active_adapters:
            if peft_name not in module.lora_A:
                continue
            rank = int(module.r[peft_name])
            if rank_one and rank != 1:
                other_ranks.add(rank)
                continue
            if getattr(module, "merged", False):
                raise ConfigError(
                    f"the LoRA adapter '{peft_name}' on {name} is merged into the weights; "
                    "load it unmerged to read or scale it"
                )
            if peft_name in getattr(module, "lora_variant", {}) or getattr(
                module, "use_dora", {}
            ).get(peft_name, False):
                raise ConfigError(
                    f"the adapter '{peft_name}' on {name} is a LoRA variant (e.g. DoRA), "
                    "whose output is not scaling * B(Ax)"
                )
            short = name.rsplit(".", 1)[-1]
            label = f"L{layer}.{short}" if layer is not None else name
            found.append(LoraAdapter(label, name, peft_name, layer, rank, module))
    if len({a.peft_name for a in found}) > 1:
        for a in found:
            a.label = f"{a.label}@{a.peft_name}"
    if rank_one and not found:
        what = (
            f"only adapters of rank {sorted(other_ranks)}"
            if other_ranks
            else "no active LoRA adapter"
        )
        raise NoRankOneAdapterError(
            f"the model has no rank-1 LoRA adapter ({what}); load a rank-1 organism "
            "(e.g. `misdirection train --recipe rank1-9`) with --adapter"
        )
    found.sort(
        key=lambda a: (a.layer if a.layer is not None else 10**9, a.module_name, a.peft_name)
    )
    return found
