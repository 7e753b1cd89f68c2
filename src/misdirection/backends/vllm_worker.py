"""The part of the vLLM backend that runs inside vLLM's workers, on vLLM's own model modules.

The driver (:mod:`misdirection.backends.vllm`) turns an intervention into a :class:`HookPlan` of
plain tensors and sends it with ``LLM.apply_model(partial(install, plan))``; vLLM pickles the
function, so everything here is a module-level function of this importable module (vLLM needs
``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` to pickle it). Each worker keeps its installed hooks in
:data:`_STATE`; installing a plan first removes the previous one, so conditions switch between
batches without reloading the model.

vLLM's decoder layers return ``(hidden, residual)`` and the next layer adds them, so the residual
stream after block ``i`` is their sum. A hook that changes it returns ``(x', 0)`` with ``x'`` the
changed sum: the next layer's fused add then reads exactly ``x'``, as the HF block would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from misdirection.errors import ConfigError

#: One operation on a residual-stream tensor: ("add", delta) or ("project", unit vector).
ResidualOp = tuple[str, torch.Tensor]


@dataclass
class LoraOp:
    """A LoRA adapter on a linear layer's output: ``out[..., lo:hi] += scaling * B (A x)``."""

    a: torch.Tensor  # [r, d_in]
    b: torch.Tensor  # [d_out, r]
    scaling: float


@dataclass
class HookPlan:
    """Everything an intervention does, as hooks on vLLM modules (names are Hugging Face names).

    ``blocks``: ops on block ``i``'s output residual; ``embed``: ops on the embedding stream (block
    0's input); ``mlp_in``: ops on block ``i``'s mid-block residual as its MLP reads it;
    ``modules``: per linear / embedding module, LoRA ops then ``("project", u)`` on its output.
    Ops of one site run in list order.
    """

    blocks: dict[int, list[ResidualOp]] = field(default_factory=dict)
    embed: list[ResidualOp] = field(default_factory=list)
    mlp_in: dict[int, list[ResidualOp]] = field(default_factory=dict)
    modules: dict[str, list[LoraOp | ResidualOp]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.blocks or self.embed or self.mlp_in or self.modules)


#: Hooks installed in this worker: the plan's, and a residual probe's (tests).
_STATE: dict[str, Any] = {"plan": [], "probe": [], "probe_stats": {}}


# ----------------------------------------------------------------------------------------------
# The model's parts


def _blocks(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"the vLLM model {type(model).__name__} has no model.layers; the vllm backend "
            "supports decoder-only models laid out like Llama / Qwen2 / Mistral"
        )
    return layers


def describe(model: nn.Module) -> dict[str, Any]:
    """What the driver checks a plan against: layer count, width, tensor-parallel size."""
    from vllm.distributed import get_tensor_model_parallel_world_size

    config = getattr(model, "config", None)
    return {
        "class": type(model).__name__,
        "n_layers": len(_blocks(model)),
        "d_model": int(getattr(config, "hidden_size", 0)),
        "tp": int(get_tensor_model_parallel_world_size()),
        "dtype": str(next(model.parameters()).dtype),
    }


def _apply_ops(x: torch.Tensor, ops: list[ResidualOp]) -> torch.Tensor:
    for kind, v in ops:
        if kind == "add":
            x = x + v
        else:  # project out a unit vector, in float32 like the HF path
            xf = x.float()
            x = (xf - (xf @ v).unsqueeze(-1) * v).to(x.dtype)
    return x


def _on_device(ops: list[Any], like: torch.Tensor) -> list[Any]:
    out: list[Any] = []
    for op in ops:
        if isinstance(op, LoraOp):
            out.append(
                LoraOp(
                    op.a.to(like.device, like.dtype), op.b.to(like.device, like.dtype), op.scaling
                )
            )
        else:
            kind, v = op
            dtype = torch.float32 if kind == "project" else like.dtype
            out.append((kind, v.to(like.device, dtype)))
    return out


def _block_output_hook(ops: list[ResidualOp]) -> Callable[..., Any]:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple) and len(output) == 2 and output[1] is not None:
            hidden, residual = output
            return _apply_ops(hidden + residual, ops), torch.zeros_like(residual)
        if isinstance(output, tuple):
            return (_apply_ops(output[0], ops), *output[1:])
        return _apply_ops(output, ops)

    return hook


def _embed_hook(ops: list[ResidualOp]) -> Callable[..., Any]:
    """Pre-hook on block 0: its ``hidden_states`` argument is the embedding stream."""

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if len(args) >= 2:
            return (args[0], _apply_ops(args[1], ops), *args[2:]), kwargs
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": _apply_ops(kwargs["hidden_states"], ops)}
        raise RuntimeError("cannot find the hidden states passed to block 0")

    return hook


def _mlp_in_hook(ops: list[ResidualOp]) -> Callable[..., Any]:
    """Pre-hook on the pre-MLP norm, called as ``norm(attn_out, residual)``: their sum is the
    mid-block residual; the norm (and the block's output) then read its ablated form."""

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
        hidden = args[0] if args else kwargs["x"]
        residual = args[1] if len(args) > 1 else kwargs.get("residual")
        if residual is None:
            raise RuntimeError("the pre-MLP norm was called without a residual")
        return (_apply_ops(hidden + residual, ops), torch.zeros_like(residual)), {}

    return hook


def _linear_hook(ops: list[Any], lo: int, hi: int) -> Callable[..., Any]:
    """Forward hook on a (possibly fused) linear layer: LoRA deltas into ``out[..., lo:hi]``."""

    def hook(_module: nn.Module, args: tuple, output: Any) -> Any:
        out = output[0] if isinstance(output, tuple) else output
        x = args[0]
        for op in ops:
            if isinstance(op, LoraOp):
                out[..., lo:hi] += ((x @ op.a.T) @ op.b.T) * op.scaling
            else:
                out[..., lo:hi] = _apply_ops(out[..., lo:hi], [op])
        return output

    return hook


def _module_target(model: nn.Module, name: str) -> tuple[nn.Module, int, int]:
    """The vLLM module computing HF module ``name``'s output and that output's slice of it."""
    modules = dict(model.named_modules())
    if name in modules:
        mod = modules[name]
        width = getattr(mod, "output_size_per_partition", None)
        return mod, 0, int(width) if width is not None else -1
    parent, _, leaf = name.rpartition(".")
    packed = getattr(model, "packed_modules_mapping", {}) or {}
    for fused, parts in packed.items():
        if leaf in parts and f"{parent}.{fused}" in modules:
            mod = modules[f"{parent}.{fused}"]
            sizes = list(getattr(mod, "output_partition_sizes", None) or [])
            if len(sizes) != len(parts):
                raise RuntimeError(f"cannot split {parent}.{fused} into {', '.join(parts)}")
            lo = sum(sizes[: parts.index(leaf)])
            return mod, lo, lo + sizes[parts.index(leaf)]
    raise RuntimeError(f"the vLLM model has no module for {name}")


# ----------------------------------------------------------------------------------------------
# Entry points (called through LLM.apply_model)


def remove(model: nn.Module) -> int:
    """Remove the installed plan's hooks; return how many there were."""
    handles = _STATE["plan"]
    for h in handles:
        h.remove()
    _STATE["plan"] = []
    return len(handles)


def install(plan: HookPlan, model: nn.Module) -> int:
    """Replace the installed hooks by ``plan``'s; return how many hooks are installed."""
    from vllm.distributed import get_tensor_model_parallel_world_size

    remove(model)
    blocks = _blocks(model)
    like = next(model.parameters())
    handles = []
    try:
        # Prepended: the plan's hooks run before any other hook on a module (e.g. a probe), which
        # sees what they wrote, whichever was installed first. One plan hook per module and site.
        if plan.modules and get_tensor_model_parallel_world_size() > 1:
            raise RuntimeError(
                "adapters and weight-form edits are applied per module and need "
                "tensor_parallel_size=1 (steering and ablation work with any size)"
            )
        for name, ops in plan.modules.items():
            mod, lo, hi = _module_target(model, name)
            hi = hi if hi >= 0 else 2**62
            handles.append(
                mod.register_forward_hook(_linear_hook(_on_device(ops, like), lo, hi), prepend=True)
            )
        if plan.embed:
            handles.append(
                blocks[0].register_forward_pre_hook(
                    _embed_hook(_on_device(plan.embed, like)), with_kwargs=True, prepend=True
                )
            )
        for i, mlp_ops in plan.mlp_in.items():
            norm: torch.nn.Module = blocks[i].post_attention_layernorm  # type: ignore[assignment]
            handles.append(
                norm.register_forward_pre_hook(
                    _mlp_in_hook(_on_device(mlp_ops, like)), with_kwargs=True, prepend=True
                )
            )
        for i, block_ops in plan.blocks.items():
            handles.append(
                blocks[i].register_forward_hook(
                    _block_output_hook(_on_device(block_ops, like)), prepend=True
                )
            )
    except Exception:
        for h in handles:
            h.remove()
        raise
    _STATE["plan"] = handles
    return len(handles)


def start_probe(units: dict[int, torch.Tensor], model: nn.Module) -> int:
    """Record, at each given block's output, the largest ``|x.u| / |x|`` over every position of
    every forward pass (after the plan's hooks, which were registered first)."""
    stop_probe(model)
    blocks = _blocks(model)
    stats: dict[int, dict[str, float]] = {i: {"max_ratio": 0.0, "positions": 0} for i in units}

    def make(i: int, u: torch.Tensor) -> Callable[..., Any]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            x = output[0] + output[1] if isinstance(output, tuple) else output
            x = x.double()
            ratio = (x @ u.double().to(x.device)).abs() / x.norm(dim=-1).clamp_min(1e-30)
            s = stats[i]
            s["max_ratio"] = max(s["max_ratio"], float(ratio.max()))
            s["positions"] += int(ratio.numel())

        return hook

    _STATE["probe"] = [blocks[i].register_forward_hook(make(i, u)) for i, u in units.items()]
    _STATE["probe_stats"] = stats
    return len(units)


def stop_probe(model: nn.Module) -> dict[int, dict[str, float]]:
    """Remove the probe; return its statistics ``{layer: {max_ratio, positions}}``."""
    for h in _STATE["probe"]:
        h.remove()
    _STATE["probe"] = []
    stats, _STATE["probe_stats"] = _STATE["probe_stats"], {}
    return stats
