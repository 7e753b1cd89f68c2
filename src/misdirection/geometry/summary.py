"""What a study reports of its geometry stage: the suite's summary and Figure 3's ceilings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from misdirection.reliability import compare_directions


class BaseCeiling(BaseModel):
    """A direction's cosine to the base model's at one layer, beside its noise ceiling."""

    vector: str
    group: str
    layer: int
    cosine: float | None
    low: float | None = None
    high: float | None = None
    ceiling: float | None = None


class GeometrySummary(BaseModel):
    """The geometry suite's result as the study keeps it."""

    layer: int
    figures: list[str] = Field(
        default_factory=list, description="The suite's figures, relative to the run folder."
    )
    markdown: str = Field(
        "", description="The suite's own summary without its title and figure links."
    )
    base_ceilings: list[BaseCeiling] = Field(default_factory=list)


def base_ceilings(
    directions: Mapping[str, Any],
    base: Any,
    layer: int,
    groups: Mapping[str, Sequence[str]],
    seed: int = 0,
) -> list[BaseCeiling]:
    """Each direction's cosine to the base direction at ``layer`` beside its noise ceiling.

    ``directions`` and ``base``: objects with ``directions`` (a DirectionSet), ``samples`` and
    ``summary`` (a DirectionSummary), as the study keeps them. Figure 3's cosines are cosines
    between two noisy directions like any other: without the ceiling a low value cannot be told
    from noise.
    """
    group_of = {m: g for g, members in groups.items() for m in members}
    rows = []
    for name, d in sorted(directions.items()):
        pair = compare_directions(
            name,
            "base",
            d.directions,
            base.directions,
            d.samples,
            base.samples,
            d.summary.split_half,
            base.summary.split_half,
            seed=seed,
        )
        cos, low, high, ceil = pair.at(layer)
        rows.append(
            BaseCeiling(
                vector=name,
                group=group_of.get(name, "ungrouped"),
                layer=layer,
                cosine=cos,
                low=low,
                high=high,
                ceiling=ceil,
            )
        )
    return rows
