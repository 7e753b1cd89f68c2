"""Defended fine-tuning: a direction ablated or steered during training only, and its cost.

Concept-ablation fine-tuning projects a direction out of the residual stream while the adapter is
trained; preventative steering adds ``scale * v`` while it is trained (the persona-vectors paper
steers *towards* the trait, so the gradient has less reason to move the model along it; a negative
scale counter-steers). In both cases the intervention is one of the package's own
(:class:`~misdirection.interventions.Ablate`, :class:`~misdirection.interventions.Steer`), active in
the training forward passes only (``train_organism(interventions=...)``); the saved adapter is
evaluated without it.

A defence is judged against the plain organism (same data, recipe and seed) by
:func:`misdirection.effects.compare`, beside random-direction controls trained the same way, and by
what it cost the narrow task: the held-out log-likelihood of the training domain's answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from misdirection.directions import DirectionSet, as_direction_set
from misdirection.errors import ConfigError, LayerIndexError, ShapeError
from misdirection.evaluate import parse_layers
from misdirection.interventions import Ablate, Steer
from misdirection.models import LoadedModel

__all__ = [
    "NarrowTaskCost",
    "check_direction_fits",
    "heldout_row_logliks",
    "narrow_task_cost",
    "parse_direction_arg",
    "training_ablation",
    "training_interventions",
    "training_steer",
]

LayersArg = Literal["all"] | list[int]


def parse_direction_arg(text: str) -> tuple[Path, LayersArg | None]:
    """``"dir.safetensors@10,12-14"`` -> (path, [10, 12, 13, 14]); no ``@`` -> (path, None).

    A path that exists as written wins over splitting at ``@`` (file names may contain one).
    """
    body, at, tail = text.rpartition("@")
    if not at or Path(text).exists():
        return Path(text), None
    return Path(body), parse_layers(tail)


def check_direction_fits(
    directions: DirectionSet,
    n_layers: int,
    d_model: int,
    layers: LayersArg | None,
    where: str,
) -> None:
    """Raise a clear error when the direction's width or the layers do not fit the model."""
    if directions.d_model != d_model:
        raise ShapeError(
            f"{where}: direction of shape {tuple(directions.directions.shape)} has width "
            f"{directions.d_model}, but the model's residual stream has d_model = {d_model}"
        )
    if directions.n_layers not in (1, n_layers):
        raise ShapeError(
            f"{where}: direction set has {directions.n_layers} layers; the model has {n_layers} "
            "(a direction file holds one row per layer, or a single row)"
        )
    if isinstance(layers, list):
        # 0-based block outputs: a negative layer is refused (the range says what is valid).
        bad = [x for x in layers if not 0 <= x < n_layers]
        if bad:
            raise LayerIndexError(
                f"{where}: layer(s) {bad} out of range for this {n_layers}-layer model "
                f"(valid 0..{n_layers - 1})"
            )


def training_ablation(
    directions: DirectionSet | torch.Tensor | str | os.PathLike[str],
    layers: LayersArg | None = None,
) -> Ablate:
    """The ablation used as a training-time defence (default: every layer, each its own row).

    A single-row direction is ablated at every chosen layer (``mode="single"``).
    """
    ds = as_direction_set(
        os.fspath(directions) if isinstance(directions, os.PathLike) else directions
    )
    chosen: Any = "all" if layers is None else layers
    if ds.n_layers == 1:
        return Ablate(ds, chosen, "single")
    return Ablate(ds, chosen, "layerwise")


def training_steer(
    directions: DirectionSet | torch.Tensor | str | os.PathLike[str],
    scale: float,
    layers: LayersArg | None = None,
) -> Steer:
    """The steering used as a training-time defence: ``scale *`` each chosen layer's row.

    Default layers: the middle layer of the direction set (steering at every layer at once would
    add the scale many times over). The scale is in units of the direction as stored (for a
    mean-diff direction, 1 adds the misaligned-minus-aligned difference itself).
    """
    ds = as_direction_set(
        os.fspath(directions) if isinstance(directions, os.PathLike) else directions
    )
    if not np.isfinite(scale):
        raise ConfigError(f"steering scale must be finite, got {scale}")
    if layers is None:
        layers = [ds.n_layers // 2]
    if ds.n_layers == 1:
        return Steer(ds, layers, scale, source_layer=0)
    return Steer(ds, layers, scale)


def training_interventions(
    model: str, ablate: str | None, steer: str | None, scale: float | None
) -> list[Any]:
    """The interventions of ``misdirection train --ablate FILE[@LAYERS] / --steer FILE[@LAYERS]``.

    Direction files, widths and layers are checked against the model's config before it loads
    (when the config is on disk; otherwise when the trainer installs them).
    """
    if (steer is None) != (scale is None):
        raise ConfigError("--steer FILE needs --scale S, and --scale only applies with --steer")
    from misdirection.model_shape import check_layers, model_shape

    shape = model_shape(model)
    out: list[Any] = []
    for flag, arg in (("--ablate", ablate), ("--steer", steer)):
        if arg is None:
            continue
        path, layers = parse_direction_arg(arg)
        ds = DirectionSet.load(path)
        if shape is not None:
            check_direction_fits(ds, shape.n_layers, shape.d_model, layers, f"{flag} {arg}")
        else:  # a Hub id: the upper bound is checked once it loads
            check_layers(
                model, {f"{flag} {arg}: layer": layers if isinstance(layers, list) else []}
            )
        if flag == "--ablate":
            out.append(training_ablation(ds, layers))
        else:
            out.append(training_steer(ds, float(scale), layers))  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------------------------------
# Narrow-task cost


@torch.no_grad()
def heldout_row_logliks(
    lm: LoadedModel, rows: list[list[dict[str, str]]], max_length: int = 384
) -> tuple[np.ndarray, np.ndarray]:
    """Per conversation: (summed log-likelihood of its assistant tokens, their count)."""
    from misdirection.batching import pad_id
    from misdirection.train import collate, encode_dataset, target_nll

    examples = encode_dataset(lm.tokenizer, rows, max_length)
    pad = pad_id(lm.tokenizer)
    was_training = lm.model.training
    lm.model.eval()
    sums, counts = np.zeros(len(rows)), np.zeros(len(rows))
    try:
        for i, example in enumerate(examples):
            nll, n = target_nll(lm.model, collate([example], [i], pad).to(lm.device))
            sums[i], counts[i] = -float(nll), n
    finally:
        lm.model.train(was_training)
    return sums, counts


class NarrowTaskCost(BaseModel):
    """What a defence cost the narrow task: held-out log-likelihood per assistant token (nats)."""

    n_rows: int
    loglik_base: float
    loglik_plain: float
    loglik_defended: float
    gain_plain: float = Field(description="plain - base: what plain fine-tuning learnt.")
    gain_defended: float
    kept: float | None = Field(
        description="gain_defended / gain_plain (None when plain training learnt nothing)."
    )
    difference: float = Field(description="defended - plain")
    difference_low: float
    difference_high: float
    min_kept: float
    task_stopped: bool | None = Field(
        description="True when the defence kept less than min_kept of the plain gain."
    )
    verdict: str


def narrow_task_cost(
    base: tuple[np.ndarray, np.ndarray],
    plain: tuple[np.ndarray, np.ndarray],
    defended: tuple[np.ndarray, np.ndarray],
    *,
    min_kept: float = 0.5,
    confidence: float = 0.95,
    draws: int = 2000,
    seed: int = 0,
) -> NarrowTaskCost:
    """Compare held-out log-likelihoods (from :func:`heldout_row_logliks`, same rows each).

    The interval of defended - plain is a paired bootstrap over held-out conversations. Rule: a
    defence *stops the narrow task* when it keeps less than ``min_kept`` of the log-likelihood gain
    that plain fine-tuning made over the base model; it is then not a defence but a failure to train.
    """
    counts = base[1]
    total = counts.sum()

    def mean(sums: np.ndarray) -> float:
        return float(sums.sum() / total)

    lb, lp, ld = mean(base[0]), mean(plain[0]), mean(defended[0])
    rng = np.random.default_rng(seed)
    n = len(counts)
    idx = rng.integers(0, n, size=(draws, n))
    diffs = (defended[0][idx].sum(1) - plain[0][idx].sum(1)) / counts[idx].sum(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    gain_p, gain_d = lp - lb, ld - lb
    kept = gain_d / gain_p if gain_p > 0 else None
    if kept is None:
        stopped, verdict = (
            None,
            "plain fine-tuning did not raise the held-out log-likelihood: no task to keep",
        )
    elif kept < min_kept:
        stopped = True
        verdict = (
            f"the defence kept {100 * kept:.0f}% of the narrow task's gain (less than "
            f"{100 * min_kept:.0f}%): it stops the narrow task too, so it is not a defence"
        )
    else:
        stopped = False
        verdict = f"the narrow task was learnt ({100 * kept:.0f}% of the plain gain kept)"
    return NarrowTaskCost(
        n_rows=n,
        loglik_base=lb,
        loglik_plain=lp,
        loglik_defended=ld,
        gain_plain=gain_p,
        gain_defended=gain_d,
        kept=kept,
        difference=ld - lp,
        difference_low=float(low),
        difference_high=float(high),
        min_kept=min_kept,
        task_stopped=stopped,
        verdict=verdict,
    )
