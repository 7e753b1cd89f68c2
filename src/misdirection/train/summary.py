"""What the study reports of one training run: a typed summary read from its run card."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from misdirection.results import Share, finite_or_none


class CurvePoint(BaseModel):
    """An organism's answers at one training step (step 0: the base model's)."""

    step: int
    condition: str
    n: int
    em: Share
    coherent: Share
    misaligned: Share | None = Field(None, description="aligned < 30, coherent or not.")
    misaligned_coherent: Share


class TrainingRun(BaseModel):
    """One organism's training: recipe, data, steps, time, loss curve and held-out log-likelihood."""

    organism: str
    recipe: str
    dataset: str
    layers: list[int] = Field(default_factory=list)
    steps: int | None = None
    dtype: str = "float32"
    seconds: float = 0.0
    losses: list[float] = Field(default_factory=list)
    heldout_loglik_before: float | None = None
    heldout_loglik_after: float | None = None
    curve: list[CurvePoint] = Field(
        default_factory=list, description="EM and coherence at saved steps (curve_every)."
    )

    @classmethod
    def from_card(
        cls, organism: str, recipe: str, dataset: str, card: dict[str, Any]
    ) -> TrainingRun:
        """From a trainer's run card (``run_card.json``)."""
        layers = card.get("layers")
        return cls(
            organism=organism,
            recipe=recipe,
            dataset=dataset,
            layers=[int(x) for x in layers] if isinstance(layers, list) else [],
            steps=card.get("steps"),
            dtype=str(card.get("dtype", "float32")),
            seconds=float(card.get("wall_time_s") or 0.0),
            losses=[float(x) for x in card.get("losses") or []],
            heldout_loglik_before=finite_or_none(card.get("heldout_loglik_before")),
            heldout_loglik_after=finite_or_none(card.get("heldout_loglik_after")),
        )
