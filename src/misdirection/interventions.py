"""Interventions on the residual stream: steering, directional ablation, weight orthogonalisation.

Layer convention: :data:`misdirection.models.LAYER_CONVENTION` — layer ``i`` is the output of
decoder block ``i`` (0-based). Every intervention

* has ``spec() -> dict`` (JSON-serialisable; recorded in the ``intervention`` column of tables) and
  is rebuilt from it by :func:`from_spec`, which dispatches on the spec's ``kind`` through
  :mod:`misdirection.intervention_registry` (each class declares its kinds and registers there);
* has ``apply(model)`` returning a context manager that installs it on a model (a LoadedModel, a
  ModelView, or any HF causal LM, peft-wrapped or not) and removes it on exit, also on exceptions.
  Inside the context it acts at every token position of every forward pass, so it covers prompt
  and generated tokens alike, with or without a KV cache, and equally in sampling, capture and
  judging-by-model.

Interventions:

* :class:`Steer` — ``x <- x + scale * v`` at the chosen layers (``v`` = that layer's direction, or
  one layer's direction everywhere with ``source_layer``).
* :class:`Ablate` — ``x <- x - (x.u) u`` with ``u = v / |v|``; ``mode="layerwise"`` (each layer its
  own direction) or ``"single"`` (the ``source_layer`` direction at every chosen layer).
  ``sites="output"`` (default) acts on block outputs; ``sites="full"`` also acts on the embedding
  stream (input of block 0) and on each chosen block's mid-point residual as the MLP reads it —
  the directional ablation of Arditi et al. 2024, which weight orthogonalisation reproduces.
* :class:`OrthogonalizeWeights` / :func:`orthogonalize_weights` — the weight form (see there for the
  exact equivalence).

Random controls (:mod:`misdirection.controls`) are direction sets of the reference's per-layer norm;
use them in place of the reference in any intervention.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
from torch import nn

from misdirection.direction_references import resolve_reference
from misdirection.direction_set import DirectionSet, as_direction_set
from misdirection.errors import ConfigError, DataError, ModelNotFoundError, ShapeError
from misdirection.hooks import (
    Hookable,
    ResidualFn,
    resid_mid,
    resid_post,
    resid_pre,
    residual_hooks,
    view_of,
)
from misdirection.intervention_registry import from_spec, register_intervention
from misdirection.models import LAYER_CONVENTION, ModelView

if TYPE_CHECKING:
    from misdirection.protocols import DirectionalIntervention, Intervention

__all__ = [
    "ABLATION_MODES",
    "Ablate",
    "Compose",
    "OrthogonalizeWeights",
    "Steer",
    "check_ablation_mode",
    "from_spec",
    "orthogonalize_weights",
]

Layers = Literal["all"] | int | Sequence[int]


# ----------------------------------------------------------------------------------------------
# Shared checks


def _layer_list(layers: Layers, view: ModelView, what: str = "layer") -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise ConfigError(
                f"layers must be 'all', an integer or a list of integers; got {layers!r}"
            )
        return list(range(view.n_layers))
    if isinstance(layers, int):
        layers = [layers]
    out = [
        view.check_layer(int(layer) if not isinstance(layer, bool) else layer, what)
        for layer in layers
    ]
    if not out:
        raise ConfigError("the list of layers is empty")
    return sorted(set(out))


def _layers_spec(layers: Layers) -> str | int | list[int]:
    if isinstance(layers, (str, int)):
        return layers
    return [int(x) for x in layers]


def _check_width(ds: DirectionSet, view: ModelView, need_all_layers: bool) -> None:
    shape = tuple(ds.directions.shape)
    if ds.d_model != view.d_model or (need_all_layers and ds.n_layers != view.n_layers):
        expected = (
            f"({view.n_layers}, {view.d_model}) = (n_layers, d_model), one direction per layer"
            if need_all_layers
            else f"(k, {view.d_model}) or ({view.d_model},): width d_model = {view.d_model}"
        )
        raise ShapeError(f"direction of shape {shape} does not fit this model: expected {expected}")


def _row(ds: DirectionSet, layer: int) -> torch.Tensor:
    return ds.directions[0] if ds.n_layers == 1 else ds.layer(layer)


def _unit(v: torch.Tensor, what: str) -> torch.Tensor:
    n = v.double().norm()
    if not torch.isfinite(n) or n == 0:
        raise DataError(f"{what} has norm {float(n)}; cannot ablate a zero or non-finite direction")
    return v.double().div(n).float()


def _param_home(view: ModelView, layer: int = 0) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a block (blocks may sit on different devices under a device map)."""
    p = next(view.blocks[layer].parameters())
    return p.device, p.dtype


def _reference(ds: DirectionSet, rows: Sequence[int]) -> dict[str, Any]:
    """Spec pointer to the set; without a file only the rows used are inlined (exact float32)."""
    ref = ds.reference()
    if "inline" in ref:
        keep = sorted({0 if ds.n_layers == 1 else r % ds.n_layers for r in rows})
        rows_ref: dict[str, Any] = {
            "inline_rows": {
                "n_layers": ds.n_layers,
                "rows": {str(r): ds.directions[r].tolist() for r in keep},
            }
        }
        if "random_control" in ref:  # a variance-matched control keeps its identity in the spec
            rows_ref["random_control"] = ref["random_control"]
        ref = rows_ref
    return ref


def _resolve(ref: dict[str, Any]) -> DirectionSet:
    if "inline_rows" in ref:
        info = ref["inline_rows"]
        rows = {int(k): v for k, v in info["rows"].items()}
        d = len(next(iter(rows.values())))
        t = torch.zeros(int(info["n_layers"]), d)
        for r, v in rows.items():
            t[r] = torch.tensor(v, dtype=torch.float32)
        if "random_control" in ref:
            return DirectionSet(
                t, {"method": "random-control", "random_control": dict(ref["random_control"])}
            )
        return DirectionSet(t, {"method": "inline"})
    return resolve_reference(ref)


# ----------------------------------------------------------------------------------------------
# Steering


@register_intervention
class Steer:
    """Add ``scale * v`` to the residual at the output of the chosen layer(s), at every position.

    ``directions``: a DirectionSet, a direction file, or a [d] / [n_layers, d] tensor. By default
    layer ``l`` gets the set's row ``l``; ``source_layer`` uses that row at every chosen layer; a
    single [d] vector is used at every chosen layer. ``normalize=True`` steers with unit vectors, so
    ``scale`` is in residual-norm units.
    """

    kind = "steer"
    condition_kind = "steer"
    control_kind = "isotropic"  # a random direction of the same norm at the same layer

    def __init__(
        self,
        directions: DirectionSet | torch.Tensor | str,
        layers: Layers,
        scale: float,
        *,
        source_layer: int | None = None,
        normalize: bool = False,
    ) -> None:
        self.directions = as_direction_set(directions)
        self.layers = layers
        self.scale = float(scale)
        self.source_layer = source_layer
        self.normalize = bool(normalize)

    def vectors(self, model: Hookable) -> dict[int, torch.Tensor]:
        """The float32 vector added at each layer (already scaled), validated against the model."""
        view = view_of(model)
        layerwise = self.source_layer is None and self.directions.n_layers > 1
        _check_width(self.directions, view, need_all_layers=layerwise)
        layers = _layer_list(self.layers, view)
        out = {}
        for layer in layers:
            src = self.source_layer if self.source_layer is not None else layer
            v = _row(self.directions, src)
            if self.normalize:
                v = _unit(v, f"steering direction of layer {src}")
            out[layer] = self.scale * v
        return out

    @contextmanager
    def apply(self, model: Hookable) -> Iterator[None]:
        view = view_of(model)
        deltas = {i: v.to(*_param_home(view, i)) for i, v in self.vectors(view).items()}

        def make(delta: torch.Tensor) -> ResidualFn:
            return lambda h: h + delta

        with residual_hooks(view, {resid_post(i): make(d) for i, d in deltas.items()}):
            yield

    def with_directions(self, directions: DirectionSet | torch.Tensor | str) -> Steer:
        """The same steering with other directions (a random control's)."""
        return _swapped(self, directions)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Steer:
        return cls(
            _resolve(spec["directions"]),
            spec["layers"],
            spec["scale"],
            source_layer=spec.get("source_layer"),
            normalize=spec.get("normalize", False),
        )

    def spec(self) -> dict[str, Any]:
        rows = (
            [self.source_layer]
            if self.source_layer is not None
            else _spec_rows(self.layers, self.directions)
        )
        return {
            "kind": self.kind,
            "directions": _reference(self.directions, rows),
            "layers": _layers_spec(self.layers),
            "scale": self.scale,
            "source_layer": self.source_layer,
            "normalize": self.normalize,
            "layer_convention": LAYER_CONVENTION,
        }


_Swappable = TypeVar("_Swappable", "Steer", "Ablate", "OrthogonalizeWeights")


def _swapped(intervention: _Swappable, directions: DirectionSet | torch.Tensor | str) -> _Swappable:
    swapped = copy.copy(intervention)
    swapped.directions = as_direction_set(directions)
    return swapped


def _spec_rows(layers: Layers, ds: DirectionSet) -> list[int]:
    if isinstance(layers, str):
        return list(range(ds.n_layers))
    return [layers] if isinstance(layers, int) else list(layers)


# ----------------------------------------------------------------------------------------------
# Ablation


@register_intervention
class Ablate:
    """Project a direction out of the residual: ``x <- x - (x.u) u``, ``u = v/|v|``, every position.

    ``mode="layerwise"``: layer ``l`` uses the set's row ``l``. ``mode="single"``: every chosen
    layer uses row ``source_layer`` (or the one vector given). ``sites="full"`` (single mode only)
    also ablates the embedding stream and the mid-block residual the MLP reads — see
    :func:`orthogonalize_weights`. The projection is computed in float32 and cast back, so in
    bfloat16 models the residual keeps a rounding-size component along ``u``.
    """

    kind = "ablate"
    condition_kind = "ablate"
    # Removes as much of the activations as the direction does (when its answers are on disk).
    control_kind = "variance-matched"

    def __init__(
        self,
        directions: DirectionSet | torch.Tensor | str,
        layers: Layers = "all",
        mode: Literal["layerwise", "single"] = "layerwise",
        source_layer: int | None = None,
        *,
        sites: Literal["output", "full"] = "output",
    ) -> None:
        self.directions = as_direction_set(directions)
        check_ablation_mode(mode)
        if sites not in ("output", "full"):
            raise ConfigError(f"ablation sites must be 'output' or 'full', got {sites!r}")
        if mode == "single" and source_layer is None and self.directions.n_layers > 1:
            raise ConfigError(
                f"single-direction ablation needs source_layer (the direction set has {self.directions.n_layers} layers)"
            )
        if sites == "full" and mode != "single":
            raise ConfigError(
                "sites='full' ablation needs mode='single' (one direction everywhere)"
            )
        self.layers = layers
        self.mode = mode
        self.source_layer = source_layer
        self.sites = sites

    def units(self, model: Hookable) -> dict[int, torch.Tensor]:
        """Unit direction (float32) at each chosen layer, validated against the model."""
        view = view_of(model)
        layerwise = self.mode == "layerwise" and self.directions.n_layers > 1
        _check_width(self.directions, view, need_all_layers=layerwise)
        layers = _layer_list(self.layers, view)
        if self.mode == "single":
            src = 0 if self.directions.n_layers == 1 else self.source_layer
            u = _unit(_row(self.directions, src), f"direction of layer {src}")  # type: ignore[arg-type]
            return {layer: u for layer in layers}
        return {
            layer: _unit(_row(self.directions, layer), f"direction of layer {layer}")
            for layer in layers
        }

    @contextmanager
    def apply(self, model: Hookable) -> Iterator[None]:
        view = view_of(model)
        units = {i: u.to(_param_home(view, i)[0]) for i, u in self.units(view).items()}

        def make(u: torch.Tensor) -> ResidualFn:
            def project(h: torch.Tensor) -> torch.Tensor:
                x = h.float()
                return (x - (x @ u).unsqueeze(-1) * u).to(h.dtype)

            return project

        fns = {resid_post(i): make(u) for i, u in units.items()}
        if self.sites == "full":  # one direction: every entry of `units` is the same vector
            fns[resid_pre(0)] = make(units[min(units)].to(_param_home(view, 0)[0]))
            for i, u in units.items():
                _mlp_input_norm(view, i)  # a clear error when the block has no pre-MLP norm
                fns[resid_mid(i)] = make(u)
        with residual_hooks(view, fns):
            yield

    def with_directions(self, directions: DirectionSet | torch.Tensor | str) -> Ablate:
        """The same ablation with other directions (a random control's)."""
        return _swapped(self, directions)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Ablate:
        return cls(
            _resolve(spec["directions"]),
            spec["layers"],
            spec["mode"],
            spec.get("source_layer"),
            sites=spec.get("sites", "output"),
        )

    def spec(self) -> dict[str, Any]:
        if self.mode == "single":
            rows = [self.source_layer if self.source_layer is not None else 0]
        else:
            rows = _spec_rows(self.layers, self.directions)
        return {
            "kind": self.kind,
            "directions": _reference(self.directions, rows),
            "layers": _layers_spec(self.layers),
            "mode": self.mode,
            "source_layer": self.source_layer,
            "sites": self.sites,
            "layer_convention": LAYER_CONVENTION,
        }


#: The two ways an ablation picks its directions (checked here only; the CLI and configs call this).
ABLATION_MODES: tuple[Literal["layerwise", "single"], ...] = ("layerwise", "single")


def check_ablation_mode(mode: str, what: str = "ablation mode") -> Literal["layerwise", "single"]:
    """``mode`` if it is an ablation mode, else one sentence naming the valid ones."""
    if mode not in ABLATION_MODES:
        raise ConfigError(f"{what} must be layerwise or single, got {mode!r}")
    return mode


def _mlp_input_norm(view: ModelView, layer: int) -> nn.Module:
    try:
        return view.mlp_norm(layer)
    except ModelNotFoundError as exc:
        raise ConfigError(f"{exc}; use sites='output'") from None


# ----------------------------------------------------------------------------------------------
# Weight orthogonalisation


def _attn_out(view: ModelView, layer: int) -> nn.Module:
    try:
        return view.attn_out(layer)
    except ModelNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def _weight_targets(
    view: ModelView, layers: list[int], embeddings: bool
) -> list[tuple[str, nn.Module, str, int]]:
    """(name, module, attribute, output axis) of every parameter that writes into the residual."""
    targets: list[tuple[str, nn.Module, str, int]] = []
    base = view.base
    if embeddings:
        emb = base.get_input_embeddings()
        for attr in ("embed_positions", "wpe", "position_embeddings"):
            if _find_attr(base, attr) is not None:
                raise ConfigError(
                    f"{type(base).__name__} has learned position embeddings ({attr}); "
                    "weight orthogonalisation supports rotary-embedding models only"
                )
        targets.append(("embed_tokens", emb, "weight", 1))
    for layer in layers:
        if view.layout.post_norms:
            raise ConfigError(
                f"block {layer} ({type(view.blocks[layer]).__name__}) normalises its attention and MLP outputs before "
                "adding them to the residual (Gemma 2/3 layout), so no weight edit equals ablation; "
                "use the activation form (Ablate)"
            )
        for kind, mod in (
            ("attn_out", _attn_out(view, layer)),
            ("down_proj", view.down_proj(layer)),
        ):
            for name, sub, attr, axis in _linear_params(mod):
                targets.append((f"{view.block_name(layer)}.{kind}{name}", sub, attr, axis))
    return targets


def _find_attr(module: nn.Module, attr: str) -> nn.Module | None:
    for _, m in module.named_modules():
        found = getattr(m, attr, None)
        if isinstance(found, nn.Module):
            return found
    return None


def _linear_params(mod: nn.Module) -> list[tuple[str, nn.Module, str, int]]:
    """Weight (output axis 0) and bias of a Linear, or of a peft LoRA layer's base and lora_B."""
    out: list[tuple[str, nn.Module, str, int]] = []
    if hasattr(mod, "base_layer") and hasattr(mod, "lora_B"):
        lora: Any = mod  # a peft LoRA layer (peft has no type information)
        if any(getattr(lora, "use_dora", {}).values()):
            raise ConfigError(
                "weight orthogonalisation does not support DoRA adapters; merge them first"
            )
        out += [(f".base_layer{n}", m, a, ax) for n, m, a, ax in _linear_params(lora.base_layer)]
        for name, lora_b in lora.lora_B.items():
            out += [(f".lora_B.{name}{n}", m, a, ax) for n, m, a, ax in _linear_params(lora_b)]
        return out
    if not isinstance(mod, nn.Linear):
        raise ConfigError(f"cannot orthogonalise a {type(mod).__name__}; expected nn.Linear")
    out.append(("", mod, "weight", 0))
    if mod.bias is not None:
        out.append(("", mod, "bias", 0))
    return out


def _orthogonalized(p: torch.Tensor, u: torch.Tensor, axis: int) -> torch.Tensor:
    """``p`` with its component along ``u`` removed on the residual axis (computed in float64)."""
    w = p.detach().double()
    u = u.to(w.device, torch.float64)
    if w.ndim == 1:
        w = w - (w @ u) * u
    elif axis == 0:  # [d_model, in]: W <- W - u (u^T W)
        w = w - torch.outer(u, u @ w)
    else:  # [vocab, d_model]: E <- E - (E u) u^T
        w = w - torch.outer(w @ u, u)
    return w.to(p.dtype)


def _single_unit(
    direction: DirectionSet | torch.Tensor | str, source_layer: int | None, view: ModelView
) -> torch.Tensor:
    ds = as_direction_set(direction)
    _check_width(ds, view, need_all_layers=False)
    if ds.n_layers > 1 and source_layer is None:
        raise ConfigError(
            f"the direction set has {ds.n_layers} layers: pass source_layer to pick one"
        )
    src = 0 if ds.n_layers == 1 else source_layer
    return _unit(_row(ds, src), f"direction of layer {src}")  # type: ignore[arg-type]


def _swap_in(
    targets: list[tuple[str, nn.Module, str, int]], u: torch.Tensor
) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """Replace each target parameter by an orthogonalised copy; return what to restore.

    New Parameter objects (not in-place edits): a tied LM head keeps reading the original embedding.
    """
    saved = []
    for _, module, attr, axis in targets:
        old = getattr(module, attr)
        saved.append((module, attr, old))
        setattr(
            module,
            attr,
            nn.Parameter(_orthogonalized(old, u, axis), requires_grad=old.requires_grad),
        )
    return saved


def orthogonalize_weights(
    model: Hookable,
    direction: DirectionSet | torch.Tensor | str,
    layers: Layers = "all",
    *,
    source_layer: int | None = None,
    embeddings: bool = True,
) -> list[str]:
    """Orthogonalise, in place, every matrix that writes into the residual against ``direction``.

    Edited: the token embeddings (``embeddings=True``) and, for each chosen block, the attention
    output projection and the MLP down-projection (weight and bias; for a peft LoRA layer the base
    weight *and* every ``lora_B``, so adapters stay exact). A tied LM head is untied and keeps the
    original matrix (the unembedding reads the residual, it does not write it). Returns the edited
    parameter names. Save the result with ``model.save_pretrained`` (merged weights).

    Exact equivalence (up to float rounding): with ``layers`` = 0..L (``"all"`` or an int ``L``
    means 0..L) and ``embeddings=True``, the model computes the same function as
    ``Ablate(direction, layers=range(L + 1), mode="single", sites="full")`` — ablation of the
    embedding stream, of every chosen block's output, and of the mid-block residual the MLP reads.
    Proof by induction: each block's input then has no component along ``u``, its attention and MLP
    read identical inputs, and only their (now orthogonalised) writes are added. It does *not* equal
    ablating block outputs only (``sites="output"``: the MLP would still read the attention's
    ``u``-component inside the block), nor any non-prefix set of layers, and it is refused for
    blocks that normalise their outputs before the residual add (Gemma 2/3) and for learned
    position embeddings.
    """
    view = view_of(model)
    u = _single_unit(direction, source_layer, view)
    chosen = (
        list(range(view.check_layer(layers) + 1))
        if isinstance(layers, int)
        else _layer_list(layers, view)
    )
    targets = _weight_targets(view, chosen, embeddings)
    _swap_in(targets, u)
    if embeddings:
        for cfg in {
            id(c): c for c in (getattr(view.base, "config", None), view.config) if c is not None
        }.values():
            if getattr(cfg, "tie_word_embeddings", False):
                cfg.tie_word_embeddings = False  # keep save_pretrained from re-tying the LM head
    return [name for name, _, _, _ in targets]


@register_intervention
class OrthogonalizeWeights:
    """The weight form as a reversible intervention: :func:`orthogonalize_weights` inside the context."""

    kind = "orthogonalize"
    condition_kind = "orthogonalize"
    control_kind = "variance-matched"  # the weight form of an ablation

    def __init__(
        self,
        direction: DirectionSet | torch.Tensor | str,
        layers: Layers = "all",
        *,
        source_layer: int | None = None,
        embeddings: bool = True,
    ) -> None:
        self.directions = as_direction_set(direction)
        self.layers = layers
        self.source_layer = source_layer
        self.embeddings = embeddings

    @contextmanager
    def apply(self, model: Hookable) -> Iterator[None]:
        view = view_of(model)
        u = _single_unit(self.directions, self.source_layer, view)
        layers = self.layers
        chosen = (
            list(range(view.check_layer(layers) + 1))
            if isinstance(layers, int)
            else _layer_list(layers, view)
        )
        saved = _swap_in(_weight_targets(view, chosen, self.embeddings), u)
        try:
            yield
        finally:
            for module, attr, old in reversed(saved):
                setattr(module, attr, old)

    def equivalent_ablation(self) -> Ablate:
        """The activation-form intervention this equals (for prefix layer sets with embeddings)."""
        if not self.embeddings:
            raise ConfigError(
                "without the embeddings the weight form equals no activation ablation"
            )
        layers = self.layers
        if isinstance(layers, int):
            layers = list(range(layers + 1))
        elif not isinstance(layers, str) and sorted(set(layers)) != list(range(max(layers) + 1)):
            raise ConfigError(
                f"layers {list(layers)} are not 0..L; the weight form equals no activation ablation"
            )
        return Ablate(self.directions, layers, "single", self.source_layer, sites="full")

    def with_directions(
        self, directions: DirectionSet | torch.Tensor | str
    ) -> OrthogonalizeWeights:
        """The same edit against other directions (a random control's)."""
        return _swapped(self, directions)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> OrthogonalizeWeights:
        return cls(
            _resolve(spec["directions"]),
            spec["layers"],
            source_layer=spec.get("source_layer"),
            embeddings=spec.get("embeddings", True),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "directions": _reference(self.directions, [self.source_layer or 0]),
            "layers": _layers_spec(self.layers),
            "source_layer": self.source_layer,
            "embeddings": self.embeddings,
            "layer_convention": LAYER_CONVENTION,
        }


# ----------------------------------------------------------------------------------------------
# Composition and rebuilding


@register_intervention
class Compose:
    """Several interventions at once, applied in order (the first one's hooks run first).

    Its random controls replace the directions of its one direction-based part.
    """

    kind = "compose"
    condition_kind = "compose"
    control_kind = None  # that of its direction-based part (see direction_part)

    def __init__(self, parts: Sequence[Intervention]) -> None:
        self.parts = list(parts)

    @contextmanager
    def apply(self, model: Hookable) -> Iterator[None]:
        with ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.apply(model))
            yield

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "parts": [p.spec() for p in self.parts]}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Compose:
        return cls([from_spec(p) for p in spec["parts"]])

    def direction_part(self) -> DirectionalIntervention:
        """The one part whose directions random controls replace."""
        from misdirection.protocols import DirectionalIntervention

        hits = [p for p in self.parts if isinstance(p, DirectionalIntervention)]
        if len(hits) != 1:
            raise ConfigError(
                "random controls need exactly one direction-based intervention; "
                f"this composition has {len(hits)}"
            )
        return hits[0]

    def with_directions(self, directions: DirectionSet | torch.Tensor | str) -> Compose:
        """The composition with its direction-based part using other directions."""
        part = self.direction_part()
        swapped = part.with_directions(as_direction_set(directions))
        return Compose([swapped if p is part else p for p in self.parts])
