"""What a study reports of its geometry stage: the suite's summary and Figure 3's ceilings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from misdirection.directions import compare_directions


class BaseCeiling(BaseModel):
    """A direction's cosine to the base model's at one layer, beside its noise ceiling."""

    vector: str
    group: str
    layer: int
    cosine: float | None
    low: float | None = None
    high: float | None = None
    ceiling: float | None = None
    cosine_without_massive: float | None = None
    ceiling_without_massive: float | None = None
    dominated: bool = Field(
        False, description="Massive dimensions hold most of either direction at this layer."
    )


class GeometrySummary(BaseModel):
    """The geometry suite's result as the study keeps it."""

    layer: int
    figures: list[str] = Field(
        default_factory=list, description="The suite's figures, relative to the run folder."
    )
    markdown: str = Field(
        "", description="The suite's own summary without its title and figure links."
    )
    markdown_without_massive: str = Field(
        "", description="The same summary with every direction's massive dimensions set to 0."
    )
    base_ceilings: list[BaseCeiling] = Field(default_factory=list)
    massive_share: dict[str, float | None] = Field(
        default_factory=dict,
        description="Each direction's share of squared norm in massive dimensions at the layer.",
    )


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
            d.summary,
            base.summary,
            seed=seed,
        )
        cos, low, high, ceil = pair.at(layer)
        lean_cos, lean_ceil = pair.without_massive_at(layer)
        rows.append(
            BaseCeiling(
                vector=name,
                group=group_of.get(name, "ungrouped"),
                layer=layer,
                cosine=cos,
                low=low,
                high=high,
                ceiling=ceil,
                cosine_without_massive=lean_cos,
                ceiling_without_massive=lean_ceil,
                dominated=pair.dominated_at(layer),
            )
        )
    return rows
