"""The report's first screen: what this run shows, row by row beside the paper's figures.

Each row is one of the paper's claims, the paper's number for it, this run's number read from the
typed results (effects, cosines, directions), and the effect's own verdict, never recomputed: a
null is printed as a null, and an EM change that came with a coherence collapse reads as one.
"""

from __future__ import annotations

from misdirection.report.document import Section, _number
from misdirection.results import Effect, pct, points, reduction_text
from misdirection.study_results import StudyResults

#: Where the paper's figures come from (the rows below quote it).
PAPER = "Soligo et al., Qwen2.5-14B-Instruct"

#: Effect kind -> (the claim, the paper's figure for it).
PAPER_FIGURES: dict[str, tuple[str, str]] = {
    "organism": ("Fine-tuning on narrow data induces EM", "11.3% EM at > 99% coherent"),
    "steer": ("Steering the base model with the direction induces EM", "up to 50% EM"),
    "ablate": ("Ablating the direction from its own organism removes EM", "EM -90%"),
    "transfer": ("Ablating it from another organism (transfer) removes EM", "EM -78%"),
}
COSINE_CLAIM = ("Different organisms' directions converge", "cosine > 0.8")

#: A verdict as the first screen says it.
READING: dict[str, str] = {
    "induced": "induced: EM rose beyond its interval, coherence kept",
    "removed": "removed: EM fell beyond its interval, coherence kept",
    "not-specific": "not specific: a random control moved EM as far",
    "collapse": "collapse: coherence fell past the policy's limit",
    "no-effect": "null: the EM change's interval covers 0",
    "not-measurable": "not measurable",
}


def reading(e: Effect) -> str:
    """The verdict in a few words, saying whether random controls were beaten or not run."""
    text = READING.get(e.verdict, e.verdict)
    if e.verdict in ("induced", "removed"):
        if e.controls is not None and e.controls.beyond:
            text += f", beyond all {len(e.controls.conditions)} random controls"
        elif e.controls is None:
            text += " (no random controls for this comparison)"
    return text


def _effect_cell(e: Effect) -> str:
    target = e.settings.get("target") or e.settings.get("organism") or ""
    where = f"{e.name}" + (f" ({target})" if target and target not in e.name else "")
    text = (
        f"{where}: EM {pct(e.em_before)} -> {pct(e.em_after)}, {points(e.em_change)}; "
        f"coherent {pct(e.coherent_after)} ({points(e.coherent_change)})"
    )
    if e.kind in ("ablate", "transfer"):
        text += f"; reduction {reduction_text(e.reduction)}"
    if e.verdict == "no-effect" and e.em_detectable is not None:
        text += f"; smallest detectable change {100 * e.em_detectable:+.1f} pts"
    return text


def _steering_rows(effects: list[Effect]) -> list[Effect]:
    """The steering point with the highest EM, and any point whose verdict is not a null."""
    if not effects:
        return []
    best = max(effects, key=lambda e: e.em_after.value or 0.0)
    rest = [e for e in effects if e is not best and e.verdict in ("induced", "not-specific")]
    return [best, *rest]


def headline_section(results: StudyResults) -> Section | None:
    """A table: claim, the paper's figure, this run's figure, the verdict; None without effects."""
    rows: list[list[str]] = []
    for kind, (claim, paper) in PAPER_FIGURES.items():
        effects = [e for e in results.effects if e.kind == kind]
        if kind == "steer":
            effects = _steering_rows(effects)
        for e in effects:
            rows.append([claim, paper, _effect_cell(e), reading(e)])
        if not effects:
            rows.append([claim, paper, "not run in this study", ""])
    cosine = results.cosine
    claim, paper = COSINE_CLAIM
    if cosine is not None and cosine.pairs:
        for p in cosine.pairs:
            mid = len(p.per_layer) // 2
            cos, low, high, ceiling = p.at(mid)
            lean, lean_ceiling = p.without_massive_at(mid)
            text = (
                f"{p.a} vs {p.b}, layer {mid}: {_number(cos)}"
                + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
                + f", noise ceiling {_number(ceiling)}; without massive dimensions "
                f"{_number(lean)} (ceiling {_number(lean_ceiling)})"
            )
            verdict = (
                "massive-dominated: read the figure without them"
                if p.dominated_at(mid)
                else ("above 0.8" if cos is not None and cos > 0.8 else "below the paper's 0.8")
            )
            if ceiling is not None and ceiling < 0.8:
                verdict += "; the ceiling itself is below 0.8, so these sets cannot show 0.8"
            rows.append([claim, paper, text, verdict])
    else:
        rows.append([claim, paper, "not run in this study", ""])
    if not any(r[2] != "not run in this study" for r in rows):
        return None
    s = Section(f"What this run shows, beside the paper ({PAPER})", "headline")
    s.add_table(["claim", "paper", "this run", "reading"], rows)
    s.text(
        f"The paper's figures are for {PAPER}; this run's model, data and answer counts are "
        "smaller (see the sections below for every interval, control and caveat). Each reading is "
        "the effect's own verdict: a null is a null, and an EM change that came with falling "
        "coherence is a collapse, not a removal or induction of misalignment."
    )
    return s
