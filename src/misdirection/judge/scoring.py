"""Score an answers table with a judge, in place and resumably.

For every rubric ``R`` the table gains four columns: ``R`` (float, NaN = no score), ``R_reason``
(why there is no score), ``R_flag`` (a non-fatal warning) and ``R_judge`` (the judge's name).

Resuming: a row counts as done for ``R`` when ``R_judge`` is this judge and it holds either a score
or a null with a reason other than a failed request; failed requests and unscored rows are (re)tried.
Rows scored by a *different* judge are never overwritten silently: pass ``overwrite=True`` or a
column ``prefix`` to keep both. When the table is a file, it is rewritten atomically (temporary file
+ ``os.replace``) after every chunk, so a crash loses at most one chunk of work, and nothing already
written is ever dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from misdirection.errors import DataError, JudgeError
from misdirection.io import atomic_path
from misdirection.judge.base import FAILED_PREFIX, JudgeItem, Rubric, Score
from misdirection.judge.rubrics import resolve_rubrics, rubrics_from_prompts
from misdirection.protocols import Judge

#: Answer text columns we understand: ours, then the one of the field's judged CSV files.
ANSWER_COLUMNS = ("answer", "response")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read an answers table from Parquet or CSV (by extension)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"answers table {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            # Only empty cells are missing: an answer reading "None" or "NA" stays text.
            df = pd.read_csv(path, keep_default_na=False, na_values=[""])
            # CSV cannot tell "" from missing: judge text columns are "" when empty, as in Parquet.
            for col in df.columns:
                if str(col).endswith(("_reason", "_flag", "_judge")):
                    df[col] = _text(df[col])
            return df
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read answers table {path}: {exc}") from None
    raise DataError(f"answers table {path} must end in .parquet or .csv")


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` to ``path`` atomically (Parquet or CSV by extension)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def score_columns(name: str, prefix: str = "") -> tuple[str, str, str, str]:
    """The (score, reason, flag, judge) column names of rubric ``name``."""
    col = f"{prefix}{name}"
    return col, f"{col}_reason", f"{col}_flag", f"{col}_judge"


def flag_counts(df: pd.DataFrame, rubric: str = "aligned") -> dict[str, int]:
    """How many answers carry each kind of judge flag in ``{rubric}_flag`` (a flag's kind is its
    text before any parenthesis; an answer can carry several), plus ``"any"``."""
    _, _, flag, _ = score_columns(rubric)
    if flag not in df:
        return {"any": 0}
    texts = _text(df[flag])
    counts: dict[str, int] = {"any": int((texts != "").sum())}
    for text in texts[texts != ""]:
        for part in text.split("; "):
            kind = part.split(" (")[0].strip()
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _text(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), "").astype(str)


def _ensure_columns(df: pd.DataFrame, cols: tuple[str, str, str, str]) -> None:
    value, reason, flag, judge = cols
    df[value] = pd.to_numeric(df[value], errors="coerce").astype(float) if value in df else np.nan
    for col in (reason, flag, judge):
        df[col] = (
            _text(df[col]).astype(object)
            if col in df
            else pd.Series([""] * len(df), index=df.index, dtype=object)
        )


def pending_rows(df: pd.DataFrame, cols: tuple[str, str, str, str], judge_name: str) -> np.ndarray:
    """Boolean mask of rows that still need ``judge_name``'s score in these columns."""
    value, reason, _, judge = cols
    reasons = df[reason].astype(str)
    done = (df[judge] == judge_name) & (
        df[value].notna() | ((reasons != "") & ~reasons.str.startswith(FAILED_PREFIX))
    )
    return ~done.to_numpy(dtype=bool)


@dataclass(frozen=True)
class RubricSummary:
    """Outcome of judging one rubric over a table."""

    rubric: str
    rows: int
    scored: int
    null: int
    failed: int
    mean: float


def summarize(
    df: pd.DataFrame, rubric_names: Sequence[str], prefix: str = ""
) -> list[RubricSummary]:
    """Per rubric: rows, numeric scores, nulls (and how many were failed requests), mean score."""
    out = []
    for name in rubric_names:
        value, reason, _, _ = score_columns(name, prefix)
        values = pd.to_numeric(df[value], errors="coerce")
        failed = int(df[reason].astype(str).str.startswith(FAILED_PREFIX).sum())
        out.append(
            RubricSummary(
                rubric=name,
                rows=len(df),
                scored=int(values.notna().sum()),
                null=int(values.isna().sum()),
                failed=failed,
                mean=float(values.mean()) if values.notna().any() else float("nan"),
            )
        )
    return out


def judge_table(
    table: str | Path | pd.DataFrame,
    judge: Judge,
    rubrics: Sequence[str | Rubric] | None = None,
    *,
    custom: Mapping[str, Rubric] | None = None,
    question_prompts: Mapping[str, Mapping[str, str]] | None = None,
    out: str | Path | None = None,
    chunk_size: int = 256,
    prefix: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Add score columns for every rubric to an answers table and return it.

    ``table`` is a DataFrame or a Parquet/CSV path (then scored in place unless ``out`` is given).
    ``rubrics``: names of built-in or ``custom`` rubrics, or Rubric objects (default aligned and
    coherent). ``question_prompts`` maps a ``question_id`` to its own ``{rubric name: prompt}``
    (the ``judge_prompts`` of a question file), used instead of the general prompt for its rows.
    """
    if isinstance(table, pd.DataFrame):
        source, df = None, table.copy()
    else:
        source = Path(table)
        df = read_table(source)
    target = Path(out) if out is not None else source
    where = f"answers table {source}" if source is not None else "answers table"
    answer_col = next((c for c in ANSWER_COLUMNS if c in df.columns), None)
    if answer_col is None or "question" not in df.columns:
        raise DataError(
            f"{where} needs columns 'question' and 'answer' (or 'response'); it has {list(df.columns)}"
        )
    if chunk_size < 1:
        raise JudgeError("chunk_size must be at least 1")
    overrides = {
        str(qid): rubrics_from_prompts(prompts, where=f"judge_prompts of question {qid!r}")
        for qid, prompts in (question_prompts or {}).items()
    }
    if overrides and "question_id" not in df.columns:
        raise DataError(
            f"{where} has no 'question_id' column, so per-question judge prompts cannot apply"
        )
    rubric_list = resolve_rubrics(rubrics, custom)

    questions = _text(df["question"]).tolist()
    answers = _text(df[answer_col]).tolist()
    qids = _text(df["question_id"]).tolist() if "question_id" in df.columns else [""] * len(df)

    work: list[tuple[Rubric, tuple[str, str, str, str], np.ndarray]] = []
    for rubric in rubric_list:
        cols = score_columns(rubric.name, prefix)
        _ensure_columns(df, cols)
        todo = pending_rows(df, cols, judge.name)
        others = set(df.loc[(df[cols[3]] != "") & (df[cols[3]] != judge.name), cols[3]])
        if not others and (df[cols[0]].notna() & (df[cols[3]] == "")).any():
            others = {
                "an unnamed judge"
            }  # e.g. the field's judged CSVs, which carry no judge column
        if others and not overwrite:
            raise JudgeError(
                f"{where}: column {cols[0]!r} already holds scores from {min(others)!r}; "
                f"pass overwrite=True (--overwrite) to replace them or a prefix (--prefix) to keep both"
            )
        work.append((rubric, cols, np.flatnonzero(todo)))

    total = sum(len(rows) for _, _, rows in work)
    bar = _progress(total, judge.name, progress)
    try:
        for rubric, cols, rows in work:
            for start in range(0, len(rows), chunk_size):
                chunk = rows[start : start + chunk_size]
                scores = _score_chunk(judge, rubric, chunk, questions, answers, qids, overrides)
                _store(df, cols, chunk, scores, judge.name)
                if target is not None:
                    write_table(df, target)
                bar.update(len(chunk))
    finally:
        bar.close()
    if target is not None and total == 0 and target != source:
        write_table(df, target)
    return df


def _score_chunk(
    judge: Judge,
    rubric: Rubric,
    rows: np.ndarray,
    questions: list[str],
    answers: list[str],
    qids: list[str],
    overrides: Mapping[str, Mapping[str, Rubric]],
) -> list[Score]:
    """Score ``rows`` under ``rubric``, using a question's own prompt where it has one."""
    groups: dict[str, list[int]] = {}
    for pos, row in enumerate(rows):
        own = overrides.get(qids[row], {}).get(rubric.name)
        groups.setdefault(own.prompt if own is not None else rubric.prompt, []).append(pos)
    scores: list[Score | None] = [None] * len(rows)
    for prompt, positions in groups.items():
        items = [JudgeItem(questions[rows[p]], answers[rows[p]]) for p in positions]
        got = judge.score(Rubric(rubric.name, prompt), items)
        if len(got) != len(items):
            raise JudgeError(
                f"judge {judge.name} returned {len(got)} scores for {len(items)} answers"
            )
        for p, score in zip(positions, got):
            scores[p] = score
    return scores  # type: ignore[return-value]


def _store(
    df: pd.DataFrame,
    cols: tuple[str, str, str, str],
    rows: np.ndarray,
    scores: list[Score],
    name: str,
) -> None:
    value, reason, flag, judge = cols
    index = df.index[rows]
    df.loc[index, value] = [np.nan if s.value is None else float(s.value) for s in scores]
    df.loc[index, reason] = [s.reason if s.value is None else "" for s in scores]
    df.loc[index, flag] = [s.flag for s in scores]
    df.loc[index, judge] = name


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, name: str, enabled: bool):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"judging with {name}", unit="answer")
