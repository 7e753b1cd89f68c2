"""Screening training data: which rows push the model along a direction?

For each training conversation (its last user turn as the prompt, its last assistant turn as the
answer), the score is the projection difference along the unit direction at a layer:

    score = mean over the row's answer tokens of (residual . u)
          - mean over the base model's own answer to the same prompt of (residual . u),

both read through the base model (the persona-vectors paper's data screening). A row whose answer
lies further along the direction than what the model would have said itself pushes training along
it. The base model's own answers are greedy (deterministic) and capped at ``max_new_tokens``.

:func:`auroc` measures how well a score ranks known-harmful rows above benign ones (0.5 = chance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field

from misdirection.directions import DirectionSet, as_direction_set
from misdirection.errors import DataError

__all__ = ["ScreenedRow", "ScreeningResult", "auroc", "screen_rows"]


class ScreenedRow(BaseModel):
    index: int
    prompt: str
    answer: str
    base_answer: str
    projection: float = Field(description="The row's answer tokens . u (mean).")
    base_projection: float
    score: float = Field(description="projection - base_projection")
    label: str | None = None


class ScreeningResult(BaseModel):
    """Rows ranked by score (highest first), the dataset mean, and AUROC when rows are labelled."""

    dataset: str
    directions: str
    layer: int
    rows: list[ScreenedRow]
    mean_score: float
    score_se: float
    positive_label: str | None = None
    auroc: float | None = None
    max_new_tokens: int

    def top(self, k: int = 5) -> list[ScreenedRow]:
        return self.rows[:k]

    def bottom(self, k: int = 5) -> list[ScreenedRow]:
        return self.rows[-k:][::-1]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.model_dump() for r in self.rows])


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count half."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    if y.all() or not y.any():
        raise DataError("AUROC needs both positive and negative rows")
    pos, neg = s[y], s[~y]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _split(row: Sequence[dict[str, str]], index: int) -> tuple[str, str, str]:
    last = max((i for i, m in enumerate(row) if m["role"] == "assistant"), default=None)
    if last is None or last == 0 or row[last - 1]["role"] != "user":
        raise DataError(f"row {index}: screening needs a user turn followed by an assistant turn")
    system = next((m["content"] for m in row[:last] if m["role"] == "system"), "")
    return row[last - 1]["content"], system, row[last]["content"]


def screen_rows(
    lm: Any,
    rows: Sequence[Sequence[dict[str, str]]],
    directions: DirectionSet | torch.Tensor | str,
    *,
    layer: int | None = None,
    labels: Sequence[str] | None = None,
    positive_label: str | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    dataset: str = "",
    progress: bool = False,
) -> ScreeningResult:
    """Score every row (see the module docstring); rows come back ranked, highest score first.

    ``layer``: the direction's layer used (default the middle one). ``labels`` (one per row) with
    ``positive_label`` add the AUROC of the ranking for that label.
    """
    from misdirection.activations import capture_activations
    from misdirection.sample import sample_answers
    from misdirection.training_time.defence import check_direction_fits

    ds = as_direction_set(directions)
    view = lm.view
    layer = view.n_layers // 2 if layer is None else layer
    check_direction_fits(ds, view.n_layers, view.d_model, [layer], "screening direction")
    layer = layer % view.n_layers
    if not rows:
        raise DataError("no rows to screen")
    if labels is not None and len(labels) != len(rows):
        raise DataError(f"{len(labels)} labels for {len(rows)} rows")
    parts = [_split(r, i) for i, r in enumerate(rows)]
    questions = [
        {"id": f"row-{i}", "paraphrases": [q], "system": s} for i, (q, s, _) in enumerate(parts)
    ]
    own = sample_answers(
        lm,
        questions,
        1,
        max_new_tokens,
        seed=0,
        batch_size=batch_size,
        temperature=0.0,
        progress=progress,
    )
    own_by_id = dict(zip(own["question_id"].astype(str), own["answer"].astype(str), strict=True))
    base_answers = [own_by_id[f"row-{i}"] or " " for i in range(len(rows))]
    table = pd.DataFrame(
        {
            "answer_id": [f"{kind}-{i}" for kind in ("row", "own") for i in range(len(rows))],
            "question": [q for q, _, _ in parts] * 2,
            "system": [s for _, s, _ in parts] * 2,
            "answer": [a for _, _, a in parts] + base_answers,
        }
    )
    acts = capture_activations(lm, table, "answer", batch_size=batch_size, progress=progress)
    unit = ds.unit()[0 if ds.n_layers == 1 else layer].double()
    proj = (acts.values[:, layer].double() @ unit).numpy()
    n = len(rows)
    scores = proj[:n] - proj[n:]
    screened = [
        ScreenedRow(
            index=i,
            prompt=parts[i][0],
            answer=parts[i][2],
            base_answer=base_answers[i],
            projection=float(proj[i]),
            base_projection=float(proj[n + i]),
            score=float(scores[i]),
            label=None if labels is None else str(labels[i]),
        )
        for i in range(n)
    ]
    screened.sort(key=lambda r: -r.score)
    value = None
    if labels is not None and positive_label is not None:
        value = auroc(scores, [str(x) == positive_label for x in labels])
    return ScreeningResult(
        dataset=dataset,
        directions=str(ds.path or ds.method),
        layer=layer,
        rows=screened,
        mean_score=float(scores.mean()),
        score_se=float(scores.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        positive_label=positive_label,
        auroc=value,
        max_new_tokens=max_new_tokens,
    )
