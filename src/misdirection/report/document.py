"""The report as data: the sections, tables and figures that both templates (markdown and HTML)
lay out, and the cell formatters the report's section builders share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    header: Sequence[str]
    rows: list[list[str]]
    #: One CSS class per row (the effect's verdict), for the HTML page; empty for none.
    row_classes: list[str] = field(default_factory=list)


@dataclass
class Figure:
    file: str  # name under report/figures/
    caption: str


@dataclass
class Block:
    """One piece of a section: ``kind`` is text, callout, list, table, figure, pre or markdown."""

    kind: str
    text: str = ""
    items: list[str] = field(default_factory=list)
    table: Table | None = None
    figure: Figure | None = None


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text=text))

    def callout(self, text: str) -> None:
        self.blocks.append(Block("callout", text=text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(Block("list", items=items))

    def add_table(
        self, header: Sequence[str], rows: list[list[Any]], classes: Sequence[str] = ()
    ) -> None:
        cells = [[str(c) for c in r] for r in rows]
        self.blocks.append(Block("table", table=Table(header, cells, list(classes))))

    def add_figure(self, figures: dict[str, Path], name: str, caption: str) -> None:
        if name in figures:
            self.blocks.append(Block("figure", figure=Figure(figures[name].name, caption)))


@dataclass
class Header:
    title: str
    facts: list[tuple[str, str]]
    judge_name: str
    judge_notice: str
    flags: str
    notes: list[str]
    policy: str


@dataclass
class Report:
    header: Header
    sections: list[Section]


def _number(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        return f"{float(x):.{digits}f}"
    except (TypeError, ValueError):
        return str(x)


def _clip(text: Any, limit: int) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"
