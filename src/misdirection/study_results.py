"""The typed result of a whole study: the engine's conditions and effects, and every analysis's own
result type, each produced by the module that owns the analysis.

``results.json`` of ``misdirection run`` is a :class:`StudyResults`; the report and the CLI read
its attributes (never re-parse text or look up keys).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from misdirection.directions import CosineComparison, DirectionSummary
from misdirection.geometry.summary import GeometrySummary
from misdirection.lora.reading import LoraReading
from misdirection.results import Example, Results
from misdirection.train.summary import TrainingRun
from misdirection.training_time.stage import DefenceStageResult


class StudyResults(Results):
    """Everything a study produced; ``results.json`` is this model, and the report renders it."""

    study: str
    base_model: str
    seed: int
    created: str
    config: dict[str, Any] = Field(description="The study config as run (StudyConfig, dumped).")
    config_yaml: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    dtype: str = Field("", description="The base model's dtype for sampling, capture, training.")
    training: list[TrainingRun] = Field(default_factory=list)
    directions: list[DirectionSummary] = Field(default_factory=list)
    cosine: CosineComparison | None = None
    lora: LoraReading | None = None
    geometry: GeometrySummary | None = None
    defence: DefenceStageResult | None = None
    examples: list[Example] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    total_seconds: float | None = Field(
        None,
        description="All runs of this run folder together (a resumed run reuses finished stages).",
    )
