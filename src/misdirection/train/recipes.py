"""LoRA recipes: where a recipe's adapters go and how they are trained, and applying them to a model."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from misdirection.errors import ConfigError
from misdirection.models import ModelView

_REFERENCE_DEPTH = 48  # the model size the rank1-9 layer numbers (15-17, 21-23, 27-29) refer to


class Recipe(BaseModel):
    """A LoRA recipe: where adapters go and how they are trained (every field overridable).

    ``layers`` (explicit indices) wins over ``group_starts``/``group_size`` (relative placement:
    groups of consecutive layers starting at ``round(f * n_layers)``); both unset = all layers.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str
    description: str = ""
    target: Literal["down_proj", "attn_mlp"] = "down_proj"
    layers: list[int] | None = None
    group_starts: list[float] | None = None
    group_size: int = Field(1, ge=1)
    rank: int = Field(1, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    use_rslora: bool = False
    lr: float = Field(5e-3, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    max_length: int = Field(384, ge=8)
    checkpoint_every: int = Field(25, ge=1)

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            valid = ", ".join(
                f for f in type(self).model_fields if f not in ("name", "description")
            )
            raise ConfigError(f"unknown recipe field(s) {', '.join(unknown)} (valid: {valid})")
        data = self.model_dump()
        data.update(overrides)
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                f"recipe field '{where}': {err['msg']} (got {err.get('input')!r})"
            ) from None

    def resolve_layers(self, view: ModelView) -> list[int]:
        """The layer indices this recipe adapts on a model (validated, sorted, distinct)."""
        if self.layers is not None:
            if not self.layers:
                raise ConfigError("recipe field 'layers' is empty: name at least one layer")
            layers = [view.check_layer(int(layer)) for layer in self.layers]
            if len(set(layers)) != len(layers):
                raise ConfigError(f"recipe field 'layers' repeats a layer: {self.layers}")
            return sorted(layers)
        if self.group_starts is None:
            return list(range(view.n_layers))
        starts = view.relative_layers(self.group_starts)
        layers = [start + k for start in starts for k in range(self.group_size)]
        if len(set(layers)) != len(layers) or max(layers) >= view.n_layers:
            raise ConfigError(
                f"recipe '{self.name}' needs {len(layers)} distinct layers but its groups overlap or run "
                f"past the end on this {view.n_layers}-layer model: pass the layers explicitly (--layers)"
            )
        return layers

    def total_steps(self, n_batches: int) -> int:
        """Optimizer steps for ``n_batches`` micro-batches per epoch, capped by ``max_steps``."""
        per_epoch = math.ceil(n_batches / self.grad_accum)
        total = math.ceil(per_epoch * self.epochs)
        return min(total, self.max_steps) if self.max_steps else total


RECIPES: dict[str, Recipe] = {
    "rank1-9": Recipe(
        name="rank1-9",
        description="nine rank-1 down-proj adapters in 3 groups of 3 layers at the relative depths "
        "of layers 15-17, 21-23, 27-29 of a 48-layer model",
        target="down_proj",
        group_starts=[15 / _REFERENCE_DEPTH, 21 / _REFERENCE_DEPTH, 27 / _REFERENCE_DEPTH],
        group_size=3,
        rank=1,
        alpha=16.0,
        lr=1e-2,  # rank 1 needs a high lr: 1e-2 beat 5e-3 and 2e-2 on smollm2-135m/bad-medical
    ),
    "rank1-single": Recipe(
        name="rank1-single",
        description="one rank-1 down-proj adapter at half depth",
        target="down_proj",
        group_starts=[0.5],
        group_size=1,
        rank=1,
        alpha=16.0,
        lr=1e-2,  # rank 1 needs a high lr: 1e-2 beat 5e-3 and 2e-2 on smollm2-135m/bad-medical
    ),
    "all-r32": Recipe(
        name="all-r32",
        description="rank-32 rsLoRA on every attention and MLP projection of every layer",
        target="attn_mlp",
        rank=32,
        alpha=64.0,
        use_rslora=True,
        lr=2e-4,
    ),
}


def get_recipe(name: str | Recipe, **overrides: Any) -> Recipe:
    """A built-in recipe by name (ConfigError naming the valid ones otherwise), with overrides."""
    if isinstance(name, Recipe):
        recipe = name
    elif name in RECIPES:
        recipe = RECIPES[name]
    else:
        raise ConfigError(f"unknown recipe {name!r}: valid recipes are {', '.join(RECIPES)}")
    return recipe.with_overrides(**overrides)


def target_module_names(view: ModelView, recipe: Recipe) -> tuple[list[int], list[str]]:
    """(layers, exact qualified module names) the recipe puts adapters on."""
    layers = recipe.resolve_layers(view)
    if recipe.target == "down_proj":
        return layers, [view.down_proj_name(i) for i in layers]
    names: list[str] = []
    for i in layers:
        prefix = view.block_name(i)
        for sub, module in view.blocks[i].named_modules():
            # Every linear layer of a block is an attention or MLP projection (norms are not linear).
            if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
                names.append(f"{prefix}.{sub}")
    return layers, names


def apply_lora(
    model: torch.nn.Module, view: ModelView, recipe: Recipe
) -> tuple[Any, list[int], list[str]]:
    """Wrap ``model`` in a PeftModel with the recipe's adapters (seeded initialisation)."""
    from peft import LoraConfig, get_peft_model

    layers, targets = target_module_names(view, recipe)
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,  # type: ignore[arg-type]  # peft annotates int; any alpha > 0 works
        lora_dropout=recipe.dropout,
        target_modules=targets,
        use_rslora=recipe.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(recipe.seed)  # the LoRA A matrices are drawn here
    return get_peft_model(model, config), layers, targets
