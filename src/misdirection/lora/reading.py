"""What a study reports of an organism's rank-1 adapters: probes, adapter roles, B-vector cosines."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ProbeSummary(BaseModel):
    """One probe on the per-answer adapter scalars: mean ± sd over its cross-validation splits."""

    name: str
    description: str = ""
    n: int
    n_positive: int | None = None
    n_negative: int | None = None
    accuracy_mean: float | None = None
    accuracy_std: float | None = None
    auc_mean: float | None = None
    auc_std: float | None = None
    f1_mean: float | None = None
    f1_std: float | None = None


class AdapterRole(BaseModel):
    """An adapter's role by the classification rule (general, domain-specific, ...)."""

    adapter: str
    classification: str
    evidence: str = ""


class BCosine(BaseModel):
    """Cosine between a rank-1 adapter's B vector and the direction at its layer."""

    adapter: str
    layer: int
    cosine: float | None
    b_norm: float | None = None
    direction_norm: float | None = None


class LoraReading(BaseModel):
    """The probes and adapter roles of one organism, or why they could not be fitted."""

    organism: str = ""
    domain: str | None = None
    probes: list[ProbeSummary] = Field(default_factory=list)
    adapters: list[AdapterRole] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    b_cosines: list[BCosine] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the probes could not be fitted (a null).")
