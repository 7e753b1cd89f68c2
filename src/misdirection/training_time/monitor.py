"""The direction's projection across training: an early warning for EM?

At chosen steps the model being trained is read on two sets of tokens:

* the **probe set**: fixed answers to the evaluation questions (by default the base model's own),
  read through the current weights; the mean over answers of the answer tokens' mean residual,
  projected on the unit direction of each layer;
* the **training batch**: the assistant tokens of the step's micro-batches, projected the same way.

Projections are in residual-stream units (dot product with the unit direction). Use it as a
training callback (``train_organism(on_step=Monitor(...))``) or on a folder of checkpoints made
elsewhere (:func:`monitor_checkpoints`). EM at chosen checkpoints needs sampling and judging, which
costs far more than the projections; the monitor only saves those checkpoints' adapters.

Departure rules (stated in every report):

* the projection *leaves its step-0 band* at the first recorded step whose probe mean lies outside
  step 0's mean +/- ``band_se`` standard errors (over probe answers) and stays outside at every
  later recorded step;
* EM *leaves the base model's interval* at the first evaluated step whose EM interval does not
  overlap the base model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field

from misdirection.directions import DirectionSet, as_direction_set
from misdirection.errors import ConfigError
from misdirection.hooks import resid_post, residual_hooks
from misdirection.results import Share

__all__ = [
    "BAND_RULE",
    "EM_RULE",
    "Monitor",
    "MonitorPoint",
    "MonitorResult",
    "monitor_checkpoints",
    "plot_monitor",
]

BAND_RULE = (
    "the projection leaves its step-0 band at the first recorded step whose probe mean lies outside "
    "step 0's mean +/- {k:g} standard errors (over probe answers) and stays outside at every later "
    "recorded step"
)
EM_RULE = (
    "EM leaves the base model's interval at the first evaluated step whose EM interval does not "
    "overlap the base model's"
)


class MonitorPoint(BaseModel):
    """Projections at one step, one value per monitored layer."""

    step: int
    probe_mean: list[float]
    probe_se: list[float]
    batch_mean: list[float | None] = Field(
        default_factory=list, description="Mean over the step's assistant tokens (None: no batch)."
    )


class EmPoint(BaseModel):
    step: int
    em: Share
    condition: str = ""


class MonitorResult(BaseModel):
    """A monitored run: projections per recorded step, optional EM per evaluated step."""

    run: str = ""
    directions: str = ""
    layers: list[int]
    figure_layer: int
    band_se: float = 2.0
    points: list[MonitorPoint] = Field(default_factory=list)
    em: list[EmPoint] = Field(default_factory=list)
    em_base: Share | None = None
    n_probe: int = 0

    def series(
        self, layer: int | None = None, which: str = "probe_mean"
    ) -> tuple[list[int], list[float | None]]:
        k = self.layers.index(self.figure_layer if layer is None else layer)
        pts = sorted(self.points, key=lambda p: p.step)
        return [p.step for p in pts], [
            getattr(p, which)[k] if getattr(p, which) else None for p in pts
        ]

    def departure_step(self, layer: int | None = None) -> int | None:
        """The step at which the probe projection leaves its step-0 band (:data:`BAND_RULE`)."""
        k = self.layers.index(self.figure_layer if layer is None else layer)
        pts = sorted(self.points, key=lambda p: p.step)
        if not pts or pts[0].step != 0:
            return None
        centre, half = pts[0].probe_mean[k], self.band_se * pts[0].probe_se[k]
        outside = [abs(p.probe_mean[k] - centre) > half for p in pts]
        for i in range(1, len(pts)):
            if all(outside[i:]):
                return pts[i].step
        return None

    def em_departure_step(self) -> int | None:
        """The step at which EM's interval leaves the base model's (:data:`EM_RULE`)."""
        base = self.em_base
        if base is None or base.low is None or base.high is None:
            return None
        for point in sorted(self.em, key=lambda p: p.step):
            lo, hi = point.em.low, point.em.high
            if lo is not None and hi is not None and (lo > base.high or hi < base.low):
                return point.step
        return None

    def rules(self) -> dict[str, str]:
        return {"projection": BAND_RULE.format(k=self.band_se), "em": EM_RULE}


def _units(directions: DirectionSet, layers: Sequence[int]) -> torch.Tensor:
    unit = directions.unit()
    if directions.n_layers == 1:
        return unit[0].expand(len(layers), -1).clone()
    return unit[list(layers)]


def probe_projections(
    lm: Any, probe: pd.DataFrame, units: torch.Tensor, layers: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard error) over probe answers of the answer-token mean residual . unit."""
    from misdirection.activations import capture_activations

    acts = capture_activations(lm, probe, "answer").values[:, list(layers)].double()
    proj = torch.einsum("nld,ld->nl", acts, units.double()).numpy()
    n = proj.shape[0]
    se = proj.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(proj.shape[1])
    return proj.mean(0), se


@torch.no_grad()
def batch_projections(
    lm: Any, batches: Sequence[Any], units: torch.Tensor, layers: Sequence[int]
) -> np.ndarray:
    """Mean over the batches' assistant tokens (labels != -100) of residual . unit, per layer."""
    from misdirection.train import IGNORE_INDEX

    view = lm.view
    total = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    current: dict[str, torch.Tensor] = {}
    u = units.to(lm.device, torch.float32)

    def make(k: int):
        def hook(h: torch.Tensor) -> None:
            proj = h.float() @ u[k]  # [B, T]
            total[k] += float(proj[current["mask"]].double().sum())

        return hook

    with residual_hooks(view, {resid_post(layer): make(k) for k, layer in enumerate(layers)}):
        for batch in batches:
            current["mask"] = batch.labels != IGNORE_INDEX
            count += int(current["mask"].sum())
            lm.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            )
    return (total / max(count, 1)).numpy()


class Monitor:
    """A training callback (``train_organism(on_step=...)``) recording projections every ``every`` steps.

    ``probe``: an answers table (columns question, answer; optional system) read at each recorded
    step. ``layers``: the layers recorded (default all); ``figure_layer`` the one plotted (default
    the middle layer). ``save_adapters_at``: steps whose adapters are saved under ``adapter_dir``
    (``step-N``) for EM evaluation afterwards; step 0 and the last step are always recorded.
    """

    def __init__(
        self,
        directions: DirectionSet | torch.Tensor | str,
        probe: pd.DataFrame,
        *,
        every: int = 5,
        layers: Sequence[int] | None = None,
        figure_layer: int | None = None,
        save_adapters_at: Sequence[int] = (),
        adapter_dir: str | Path | None = None,
        band_se: float = 2.0,
        run: str = "",
    ) -> None:
        if every < 1:
            raise ConfigError(f"monitor every must be >= 1, got {every}")
        if save_adapters_at and adapter_dir is None:
            raise ConfigError("saving adapters at chosen steps needs adapter_dir")
        self.directions = as_direction_set(directions)
        n = self.directions.n_layers
        self.layers = list(range(n)) if layers is None else [int(x) for x in layers]
        self.figure_layer = n // 2 if figure_layer is None else int(figure_layer)
        if self.figure_layer not in self.layers:
            self.layers = sorted({*self.layers, self.figure_layer})
        self.units = _units(self.directions, self.layers)
        self.probe = probe
        self.every = every
        self.save_at = {int(s) for s in save_adapters_at}
        self.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        self.result = MonitorResult(
            run=run,
            directions=str(self.directions.path or self.directions.method),
            layers=self.layers,
            figure_layer=self.figure_layer,
            band_se=band_se,
            n_probe=len(probe),
        )

    def record(self, step: int, lm: Any, batches: Sequence[Any] = ()) -> MonitorPoint:
        mean, se = probe_projections(lm, self.probe, self.units, self.layers)
        batch: list[float | None] = (
            [float(x) for x in batch_projections(lm, batches, self.units, self.layers)]
            if batches
            else [None] * len(self.layers)
        )
        point = MonitorPoint(
            step=step,
            probe_mean=[float(x) for x in mean],
            probe_se=[float(x) for x in se],
            batch_mean=batch,
        )
        # A resumed run records a step again: the later reading replaces the earlier one.
        self.result.points = [p for p in self.result.points if p.step != step] + [point]
        return point

    def __call__(self, event: Any) -> None:
        step = event.step
        if step in self.save_at and self.adapter_dir is not None:
            event.lm.model.save_pretrained(self.adapter_dir / f"step-{step}")
        if step % self.every == 0 or step == event.total_steps or step in self.save_at:
            self.record(step, event.lm, event.batches)


def step_of(path: Path, index: int) -> int:
    """A checkpoint's step: its run card's step count, else the number ending its name, else ``index``."""
    card = path / "run_card.json"
    if card.is_file():
        import json

        return int(json.loads(card.read_text()).get("steps", index))
    match = re.search(r"(\d+)$", path.name)
    return int(match.group(1)) if match else index


def monitor_checkpoints(
    model: str | Any,
    checkpoints: Sequence[str | Path],
    directions: DirectionSet | str,
    probe: pd.DataFrame,
    *,
    data_rows: Sequence[Sequence[dict[str, str]]] = (),
    layers: Sequence[int] | None = None,
    figure_layer: int | None = None,
    band_se: float = 2.0,
    include_base: bool = True,
    max_length: int = 384,
    batch_size: int = 8,
) -> MonitorResult:
    """Read existing checkpoints (PEFT adapter folders) the way :class:`Monitor` reads a live run.

    The step of each checkpoint is the number its folder name ends with (``step-40`` -> 40), else
    its position. ``include_base`` records the base model as step 0 (the band's reference).
    ``data_rows``: training conversations read as "the training batch" at every checkpoint.
    """
    from misdirection.batching import pad_id
    from misdirection.models import adapter_attached, load_model
    from misdirection.train import collate, encode_dataset

    lm = load_model(model) if isinstance(model, str) else model
    monitor = Monitor(
        directions, probe, every=1, layers=layers, figure_layer=figure_layer, band_se=band_se
    )
    from misdirection.training_time.defence import check_direction_fits

    check_direction_fits(
        monitor.directions, lm.view.n_layers, lm.view.d_model, monitor.layers, "--directions"
    )
    batches = []
    if data_rows:
        examples = encode_dataset(lm.tokenizer, [list(r) for r in data_rows], max_length)
        pad = pad_id(lm.tokenizer)
        batches = [
            collate(
                examples[i : i + batch_size],
                list(range(i, min(i + batch_size, len(examples)))),
                pad,
            ).to(lm.device)
            for i in range(0, len(examples), batch_size)
        ]
    paths = [Path(c) for c in checkpoints]
    for p in paths:
        if not (p / "adapter_config.json").is_file():
            raise ConfigError(f"{p} is not a PEFT adapter folder (no adapter_config.json)")
    if include_base:
        monitor.record(0, lm, batches)
    for index, path in enumerate(paths, start=1):
        with adapter_attached(lm, str(path)) as tuned:
            monitor.record(step_of(path, index), tuned, batches)
    monitor.result.points.sort(key=lambda p: p.step)
    return monitor.result


def plot_monitor(results: Sequence[MonitorResult], path: str | Path, title: str = "") -> Path:
    """Projection against step (probe and training batch) beside EM against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_p, ax_e) = plt.subplots(1, 2, figsize=(11, 4))
    for res in results:
        steps, probe = res.series()
        _, se = res.series(which="probe_se")
        line = ax_p.plot(steps, probe, marker="o", ms=3, label=f"{res.run or 'run'} probe")[0]
        lo = [
            m - res.band_se * s
            for m, s in zip(probe, se, strict=True)
            if m is not None and s is not None
        ]
        hi = [
            m + res.band_se * s
            for m, s in zip(probe, se, strict=True)
            if m is not None and s is not None
        ]
        if len(lo) == len(steps):
            ax_p.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
        _, batch = res.series(which="batch_mean")
        if any(b is not None for b in batch):
            ax_p.plot(
                steps,
                [np.nan if b is None else b for b in batch],
                ls="--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{res.run or 'run'} training batch",
            )
        dep = res.departure_step()
        if dep is not None:
            ax_p.axvline(dep, color=line.get_color(), ls=":", alpha=0.8)
        if res.em:
            pts = sorted(res.em, key=lambda p: p.step)
            xs = [p.step for p in pts]
            ys = [100 * (p.em.value or 0) for p in pts]
            err = [
                [100 * ((p.em.value or 0) - (p.em.low or 0)) for p in pts],
                [100 * ((p.em.high or 0) - (p.em.value or 0)) for p in pts],
            ]
            ax_e.errorbar(
                xs,
                ys,
                yerr=err,
                marker="o",
                capsize=3,
                color=line.get_color(),
                label=res.run or "run",
            )
            if (
                res.em_base is not None
                and res.em_base.low is not None
                and res.em_base.high is not None
            ):
                ax_e.axhspan(
                    100 * res.em_base.low,
                    100 * res.em_base.high,
                    color="grey",
                    alpha=0.2,
                    label="base model EM interval",
                )
    ax_p.set_xlabel("training step")
    layer = results[0].figure_layer if results else 0
    ax_p.set_ylabel(f"mean projection on the direction (layer {layer})")
    ax_p.set_title(
        "projection (band: step 0 +/- %g SE; dotted: leaves band)"
        % (results[0].band_se if results else 2)
    )
    ax_p.legend(fontsize=7)
    ax_e.set_xlabel("training step")
    ax_e.set_ylabel("EM % (95% interval)")
    ax_e.set_title(
        "EM at evaluated checkpoints" if any(r.em for r in results) else "EM not evaluated"
    )
    if any(r.em for r in results):
        ax_e.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
