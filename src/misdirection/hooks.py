"""Forward hooks on the residual stream at decoder-block boundaries.

Layer convention (project-wide, :data:`misdirection.models.LAYER_CONVENTION`): layer ``i`` is the
output of decoder block ``i`` (0-based), i.e. ``hidden_states[i + 1]`` in Hugging Face terms. The
*embedding stream* (the input of block 0, ``hidden_states[0]``) is reached with
:func:`block_input_hooks` on block 0.

Blocks return either a tensor (transformers >= 5) or a tuple whose first element is the residual;
these helpers read and replace the residual in both cases. Every hook is removed when its context
exits, also on exceptions. Hooks run in registration order and each sees the output the previous
one returned, so an intervention applied *outside* a capture is seen by the capture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from misdirection.models import LoadedModel, ModelView

#: A function of the residual [batch, tokens, d_model]: returns a replacement, or None to keep it.
ResidualFn = Callable[[torch.Tensor], torch.Tensor | None]
#: Decoder blocks, indexable by layer (``ModelView.blocks`` is an ``nn.ModuleList``).
Blocks = Sequence[nn.Module] | nn.ModuleList


def view_of(model: Any) -> ModelView:
    """The :class:`ModelView` of a LoadedModel, a ModelView, or any HF causal LM (peft or not)."""
    if isinstance(model, ModelView):
        return model
    if isinstance(model, LoadedModel):
        return model.view
    return ModelView.of(model)


def residual_of(output: Any) -> torch.Tensor:
    """The residual stream in a block's output (the tensor itself, or the tuple's first element)."""
    return output[0] if isinstance(output, tuple) else output


def with_residual(output: Any, residual: torch.Tensor) -> Any:
    """``output`` with its residual replaced, keeping the block's return structure."""
    return (residual, *output[1:]) if isinstance(output, tuple) else residual


@contextmanager
def block_output_hooks(blocks: Blocks, fns: Mapping[int, ResidualFn]) -> Iterator[None]:
    """Run ``fns[i]`` on the output residual of ``blocks[i]`` while the context is open."""
    handles = []

    def make(fn: ResidualFn) -> Callable[..., Any]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            new = fn(residual_of(output))
            return None if new is None else with_residual(output, new)

        return hook

    try:
        for i, fn in fns.items():
            handles.append(blocks[i].register_forward_hook(make(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def block_input_hooks(blocks: Blocks, fns: Mapping[int, ResidualFn]) -> Iterator[None]:
    """Run ``fns[i]`` on the input residual of ``blocks[i]`` (positional or ``hidden_states=``)."""
    handles = []

    def make(fn: ResidualFn) -> Callable[..., Any]:
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            if "hidden_states" in kwargs:
                new = fn(kwargs["hidden_states"])
                return None if new is None else (args, {**kwargs, "hidden_states": new})
            return None

        return hook

    try:
        for i, fn in fns.items():
            handles.append(blocks[i].register_forward_pre_hook(make(fn), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()
