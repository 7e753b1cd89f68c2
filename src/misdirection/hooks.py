"""Forward hooks on the residual stream, at named hook points shared by capture and interventions.

Hook points are named as in TransformerLens, so a reader who knows its names knows ours:

* ``blocks.{L}.hook_resid_pre`` — the residual entering block ``L`` (``L = 0``: the embedding
  stream); a forward pre-hook on the block;
* ``blocks.{L}.hook_resid_mid`` — the mid-block residual as the MLP reads it (after the attention
  has been added), a pre-hook on the block's pre-MLP norm (pre-norm layouts only);
* ``blocks.{L}.hook_resid_post`` — the output of block ``L``: *layer L* in our convention, what
  :mod:`misdirection.activations` captures and steering adds to.

:func:`residual_hooks` installs functions at hook points by name; :func:`resid_pre`,
:func:`resid_mid` and :func:`resid_post` spell the names.

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

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from misdirection.errors import ConfigError
from misdirection.models import LoadedModel, ModelView

#: The residual-stream sites a hook point can name (TransformerLens's names).
SITES = ("resid_pre", "resid_mid", "resid_post")
_NAME = re.compile(r"blocks\.(-?\d+)\.hook_(resid_pre|resid_mid|resid_post)")

#: A function of the residual [batch, tokens, d_model]: returns a replacement, or None to keep it.
ResidualFn = Callable[[torch.Tensor], torch.Tensor | None]
#: Decoder blocks, indexable by layer (``ModelView.blocks`` is an ``nn.ModuleList``).
Blocks = Sequence[nn.Module] | nn.ModuleList
#: What hooks (and so interventions) install on: a LoadedModel, a ModelView, or any transformers
#: causal LM, peft-wrapped or not.
Hookable = LoadedModel | ModelView | nn.Module
#: What a decoder block returns: the residual (transformers >= 5) or a tuple led by it.
BlockOutput = torch.Tensor | tuple[Any, ...]


def resid_pre(layer: int) -> str:
    """Hook point of the residual entering block ``layer`` (layer 0: the embedding stream)."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    """Hook point of block ``layer``'s mid-block residual, as its MLP reads it."""
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    """Hook point of block ``layer``'s output: layer ``layer`` in the project's convention."""
    return f"blocks.{layer}.hook_resid_post"


def parse_hook_point(name: str, n_layers: int | None = None) -> tuple[int, str]:
    """``"blocks.3.hook_resid_post"`` -> ``(3, "resid_post")``; layer checked when n_layers given."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise ConfigError(
            f"unknown hook point {name!r}; hook points are blocks.L.hook_SITE with SITE one of "
            f"{', '.join(SITES)}"
        )
    layer = int(m.group(1))
    if n_layers is not None:
        from misdirection.errors import check_layer

        layer = check_layer(layer, n_layers, f"hook point {name}: layer")
    return layer, m.group(2)


def view_of(model: Hookable) -> ModelView:
    """The :class:`ModelView` of a LoadedModel, a ModelView, or any HF causal LM (peft or not)."""
    if isinstance(model, ModelView):
        return model
    if isinstance(model, LoadedModel):
        return model.view
    return ModelView.of(model)


def residual_of(output: BlockOutput) -> torch.Tensor:
    """The residual stream in a block's output (the tensor itself, or the tuple's first element)."""
    if isinstance(output, tuple):
        residual: torch.Tensor = output[0]
        return residual
    return output


def with_residual(output: BlockOutput, residual: torch.Tensor) -> BlockOutput:
    """``output`` with its residual replaced, keeping the block's return structure."""
    return (residual, *output[1:]) if isinstance(output, tuple) else residual


@contextmanager
def block_output_hooks(blocks: Blocks, fns: Mapping[int, ResidualFn]) -> Iterator[None]:
    """Run ``fns[i]`` on the output residual of ``blocks[i]`` while the context is open."""
    handles = []

    def make(fn: ResidualFn) -> Callable[..., Any]:
        def hook(_module: nn.Module, _args: Any, output: BlockOutput) -> BlockOutput | None:
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
        def hook(
            _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
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


@contextmanager
def residual_hooks(model: Hookable, fns: Mapping[str, ResidualFn]) -> Iterator[None]:
    """Run ``fns[name]`` on the residual at each named hook point while the context is open.

    ``model``: anything :func:`view_of` takes. Hooks installed by an enclosing context run first,
    and what they return is what these see (so a capture inside an intervention sees its effect).
    """
    from contextlib import ExitStack

    view = view_of(model)
    post: dict[int, ResidualFn] = {}
    pre: dict[int, ResidualFn] = {}
    mid: dict[int, ResidualFn] = {}
    for name, fn in fns.items():
        layer, site = parse_hook_point(name, view.n_layers)
        {"resid_post": post, "resid_pre": pre, "resid_mid": mid}[site][layer] = fn
    with ExitStack() as stack:
        if post:
            stack.enter_context(block_output_hooks(view.blocks, post))
        if pre:
            stack.enter_context(block_input_hooks(view.blocks, pre))
        if mid:
            norms = {layer: view.mlp_norm(layer) for layer in mid}
            stack.enter_context(
                block_input_hooks(list(norms.values()), {k: mid[i] for k, i in enumerate(norms)})
            )
        yield
