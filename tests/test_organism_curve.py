"""scripts/organism_curve.py: the sample-size formula and the selection rule (no model needed)."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "organism_curve.py"), run_name="not_main")


def _row(step: int, em: int, coherent: int, n: int = 100, base: dict | None = None) -> dict:
    from misdirection.intervals import difference

    def share(count: int) -> dict:
        return {"value": count / n, "count": count, "n": n, "low": 0.0, "high": 1.0}

    row = {"step": step, "n": n, "em": share(em), "coherent": share(coherent)}
    if base is not None:
        d, lo, hi = difference(base["em"]["count"], base["n"], em, n)
        row["em_diff"] = {"value": d, "low": lo, "high": hi}
    return row


def test_answers_needed_matches_the_textbook_value() -> None:
    # Fleiss (no continuity correction): 10% against 20% at two-sided 5% and power 80% needs 199.
    assert SCRIPT["answers_needed"](0.10, 0.20) == 199
    assert SCRIPT["answers_needed"](0.20, 0.10) == 199
    assert SCRIPT["answers_needed"](0.1, 0.1) is None


def test_rule_takes_the_earliest_distinguishable_coherent_checkpoint() -> None:
    base = _row(0, 5, 40)
    rows = [
        _row(10, 8, 40, base=base),  # not distinguishable
        _row(20, 30, 10, base=base),  # distinguishable but coherence below half the base's
        _row(30, 25, 30, base=base),  # the one
        _row(40, 35, 30, base=base),  # higher EM, later
    ]
    choice = SCRIPT["choose"](rows, base, 0.5)
    assert choice["step"] == 30 and choice["distinguishable"]


def test_rule_falls_back_to_max_em_with_the_size_that_would_answer() -> None:
    base = _row(0, 10, 40)
    rows = [_row(10, 12, 40, base=base), _row(20, 15, 40, base=base), _row(30, 15, 40, base=base)]
    choice = SCRIPT["choose"](rows, base, 0.5)
    assert choice["step"] == 20 and not choice["distinguishable"]
    assert choice["answers_needed_per_condition"] == SCRIPT["answers_needed"](0.10, 0.15)


def test_checkpoint_steps_every_k_end_at_the_last_step_or_follow_at() -> None:
    steps = SCRIPT["checkpoint_steps"]
    assert steps(27, 108, None) == [27, 54, 81, 108]
    assert steps(25, 60, None) == [25, 50, 60]
    assert steps(27, 54, "54,9,18,27") == [9, 18, 27, 54]
