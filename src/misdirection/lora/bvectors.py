"""B vectors against directions: each rank-1 adapter writes one fixed direction ``b = B[:, 0]``
into the residual stream. Here: its cosine with a direction at its layer
(:func:`b_direction_cosines`), the weight-form ablation of a direction from B
(:class:`BVectorAblation`, an intervention) and the downstream convergence of the activation
changes two interventions cause (:func:`downstream_convergence`, :class:`Convergence`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from misdirection.batching import pad_id, right_pad
from misdirection.errors import ConfigError, DataError, ShapeError
from misdirection.intervention_registry import register_intervention
from misdirection.lora.adapters import _view, find_lora_adapters
from misdirection.lora.encoding import (
    _batches,
    _eval_mode,
    encode_answers,
)
from misdirection.lora.scaling import resolve_adapter_selection


def _directions_tensor(directions: Any, n_layers: int, d_model: int) -> Any:
    import torch

    d = torch.as_tensor(directions).detach().float().cpu()
    if d.ndim != 2 or d.shape[0] != n_layers or d.shape[1] != d_model:
        raise ShapeError(
            f"directions have shape {tuple(d.shape)}, expected [n_layers, d_model] = "
            f"[{n_layers}, {d_model}]"
        )
    return d


def b_direction_cosines(model: Any, directions: Any) -> pd.DataFrame:
    """Cosine between each rank-1 adapter's B vector and the direction at its layer.

    ``directions``: [n_layers, d_model] tensor (e.g. ``DirectionSet.directions``). Returns
    adapter, layer, cosine, b_norm, direction_norm (cosine NaN where either vector is zero).
    """
    view = _view(model)
    d = _directions_tensor(directions, view.n_layers, view.d_model)
    rows = []
    for a in find_lora_adapters(model, rank_one=True):
        b = a.b_vector().cpu()
        if a.layer is None:
            continue
        if b.shape[0] != view.d_model:
            raise ShapeError(
                f"adapter {a.label} writes vectors of width {b.shape[0]}, "
                f"not the residual width {view.d_model}"
            )
        u = d[a.layer]
        bn, un = float(b.norm()), float(u.norm())
        cos = float(b @ u) / (bn * un) if bn > 0 and un > 0 else math.nan
        rows.append(
            {
                "adapter": a.label,
                "layer": a.layer,
                "cosine": cos,
                "b_norm": bn,
                "direction_norm": un,
            }
        )
    return pd.DataFrame(rows)


@register_intervention
class BVectorAblation:
    """Weight-form ablation of a direction from rank-1 adapters' B vectors: ``B <- B - (B.u) u``.

    ``u`` is the unit direction at each adapter's layer (``source_layer`` set: that one layer's
    direction for every adapter). ``layers`` limits which adapters are edited (default: all).
    The original B weights are restored exactly on exit. ``directions``: a DirectionSet, a
    direction file or a [n_layers, d] tensor. Protocol: ``spec()``, ``apply(model)``, ``from_spec``.
    """

    kind = "ablate-b"
    condition_kind = "ablate-b"
    control_kind = "variance-matched"  # an ablation: same variance removed, when on disk

    def __init__(
        self,
        directions: Any,
        layers: Sequence[int] | None = None,
        source_layer: int | None = None,
    ) -> None:
        from misdirection.direction_set import as_direction_set

        self.directions = as_direction_set(directions)
        self.layers = None if layers is None else [int(x) for x in layers]
        self.source_layer = source_layer

    def spec(self) -> dict[str, Any]:
        from misdirection.models import LAYER_CONVENTION

        return {
            "kind": self.kind,
            "directions": self.directions.reference(),
            "layers": "all" if self.layers is None else self.layers,
            "mode": "layerwise" if self.source_layer is None else "single",
            "source_layer": self.source_layer,
            "layer_convention": LAYER_CONVENTION,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BVectorAblation:
        from misdirection.direction_references import resolve_reference

        if spec.get("kind") != cls.kind:
            raise ConfigError(f"not a B-vector ablation spec: kind {spec.get('kind')!r}")
        layers = spec.get("layers", "all")
        return cls(
            resolve_reference(spec["directions"]),
            None if layers == "all" else list(layers),
            spec.get("source_layer"),
        )

    def with_directions(self, directions: Any) -> BVectorAblation:
        """The same ablation of other directions (a random control's)."""
        return type(self)(directions, self.layers, self.source_layer)

    @contextlib.contextmanager
    def apply(self, model: Any) -> Iterator[list[str]]:
        import torch

        view = _view(model)
        d = _directions_tensor(self.directions.directions, view.n_layers, view.d_model)
        selection = "all" if self.layers is None else self.layers
        chosen = resolve_adapter_selection(
            model, [selection] if selection == "all" else selection, rank_one=True
        )
        src = (
            None
            if self.source_layer is None
            else view.check_layer(self.source_layer, "source layer")
        )
        saved = []
        try:
            with torch.no_grad():
                for a, _ in chosen.values():
                    if a.layer is None:
                        continue
                    u = d[src if src is not None else a.layer]
                    if float(u.norm()) == 0:
                        raise ShapeError(
                            f"the direction at layer {a.layer} is the zero vector; cannot ablate it"
                        )
                    u = (u / u.norm()).to(a.B.device, a.B.dtype)
                    saved.append((a.B, a.B.detach().clone()))
                    a.B.sub_(torch.outer(u, u @ a.B))
            yield list(chosen)
        finally:
            with torch.no_grad():
                for w, orig in saved:
                    w.copy_(orig)


@dataclass
class Convergence:
    """Per-layer agreement between the activation changes two interventions cause.

    ``table`` columns: layer, ``cosine_of_means`` (cosine between the two mean differences over
    answer tokens), ``mean_token_cosine`` (per-token cosine averaged over tokens where both
    differences are non-zero; NaN where none), ``norm_first`` / ``norm_second`` (mean per-token
    norm of each difference).
    """

    table: pd.DataFrame
    first: dict[str, Any]
    second: dict[str, Any]
    baseline: dict[str, Any]


def downstream_convergence(
    lm: Any,
    answers: pd.DataFrame,
    first: Any,
    second: Any,
    baseline: Any = None,
    batch_size: int = 8,
    max_tokens: int | None = None,
) -> Convergence:
    """Cosine, at every layer, between the residual changes two interventions induce.

    Runs the model three times per batch: under ``baseline`` (None: the model as it is), under
    ``first`` and under ``second`` (objects with ``apply(model)``; None = no change), captures
    every block's output at the answer tokens and compares ``h_first - h_base`` with
    ``h_second - h_base``. Example, the adapter against steering with a direction: baseline
    ``AdapterScaling({"all": 0})``, first ``None`` (adapter on), second
    ``interventions.Compose([AdapterScaling({"all": 0}), Steer(...)])``. Layers before either
    intervention acts have zero differences and NaN cosines.
    """
    import torch

    from misdirection.hooks import resid_post, residual_hooks

    model = lm.model
    view = lm.view
    encoded = [e for e in encode_answers(lm, answers, max_tokens) if e.n_answer]
    if not encoded:
        raise DataError("no answer has any token; nothing to compare")
    pad = pad_id(lm.tokenizer)
    L = view.n_layers
    sum_a = torch.zeros(L, view.d_model, dtype=torch.float64)
    sum_b = torch.zeros_like(sum_a)
    tok_cos = torch.zeros(L, dtype=torch.float64)
    tok_n = torch.zeros(L, dtype=torch.float64)
    norm_a = torch.zeros(L, dtype=torch.float64)
    norm_b = torch.zeros(L, dtype=torch.float64)
    n_tok = 0

    def run(intervention: Any, ids: Any, mask: Any) -> list[Any]:
        store: dict[int, Any] = {}

        def keep(i: int) -> Any:
            def fn(residual: Any) -> None:
                store[i] = residual.detach().float()

            return fn

        ctx = intervention.apply(model) if intervention is not None else contextlib.nullcontext()
        # Capture hooks go on after the intervention's, so they see what it wrote.
        with ctx, residual_hooks(view, {resid_post(i): keep(i) for i in range(L)}):
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
            except TypeError:  # models without logits_to_keep
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        return [store[i] for i in range(L)]

    with _eval_mode(model), torch.no_grad():
        for batch in _batches(encoded, batch_size):
            ids, mask = (t.to(lm.device) for t in right_pad([e.ids for e in batch], pad))
            sel = torch.zeros_like(mask, dtype=torch.bool)
            for j, e in enumerate(batch):
                sel[j, e.n_prompt : len(e.ids)] = True
            h0, ha, hb = run(baseline, ids, mask), run(first, ids, mask), run(second, ids, mask)
            n_tok += int(sel.sum())
            for i in range(L):
                da = (ha[i] - h0[i])[sel].double().cpu()
                db = (hb[i] - h0[i])[sel].double().cpu()
                sum_a[i] += da.sum(0)
                sum_b[i] += db.sum(0)
                na, nb = da.norm(dim=1), db.norm(dim=1)
                norm_a[i] += na.sum()
                norm_b[i] += nb.sum()
                ok = (na > 0) & (nb > 0)
                tok_cos[i] += ((da[ok] * db[ok]).sum(1) / (na[ok] * nb[ok])).sum()
                tok_n[i] += ok.sum()
    rows = []
    for i in range(L):
        ma, mb = sum_a[i] / n_tok, sum_b[i] / n_tok
        den = float(ma.norm() * mb.norm())
        rows.append(
            {
                "layer": i,
                "cosine_of_means": float(ma @ mb) / den if den > 0 else math.nan,
                "mean_token_cosine": float(tok_cos[i] / tok_n[i]) if tok_n[i] > 0 else math.nan,
                "norm_first": float(norm_a[i] / n_tok),
                "norm_second": float(norm_b[i] / n_tok),
            }
        )

    def spec(x: Any) -> dict[str, Any]:
        return x.spec() if x is not None else {"type": "none"}

    return Convergence(pd.DataFrame(rows), spec(first), spec(second), spec(baseline))
