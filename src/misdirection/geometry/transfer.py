"""Transfer effectiveness of steering directions and dose-response curves from evaluation results.

Input is a results table (pandas DataFrame, or a CSV/Parquet path) with one row per judged answer
or per evaluation cell:

- ``source``: the direction used (empty, ``none``, ``baseline`` or ``base`` for unsteered runs),
- ``target``: the organism / question domain evaluated,
- ``scale``: steering scale (optional; 0 also counts as unsteered),
- per-answer ``aligned`` and ``coherent`` scores (EM by :func:`misdirection.metrics.em_mask`, the
  package's one EM rule, with its :class:`~misdirection.metrics.Thresholds`; shares are over all
  answers, an answer with a null score counts as not EM and is counted in ``n_unscored``), or
  one row per cell with ``em_rate`` and its answer count ``n``.

Transfer effectiveness of source s on target t = (rate[s, t] - base[t]) / (rate[s, s] - base[s]):
1 = the direction works on t as well as on its own domain, 0 = no effect. It is NaN where the
source has no effect on its own domain (denominator <= 0) or a needed cell is missing; every such
cell gets a note. Its interval resamples the answers of each cell (a binomial draw of the cell's
EM count, which is exactly what resampling its 0/1 answers does) and takes percentiles of the
ratio; it is "not estimable" (NaN, with a note) when the denominator is <= 0 in more resamples
than the interval's tail.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from misdirection.errors import DataError
from misdirection.intervals import wilson
from misdirection.metrics import Thresholds, em_mask

BASELINE_LABELS = {"", "none", "baseline", "base"}
DEFAULT_RESAMPLES = 2000


class TransferMatrix(TypedDict):
    """:func:`transfer_effectiveness`'s result: [sources, targets] arrays and their labels."""

    sources: list[str]
    targets: list[str]
    scale: dict[str, float]  # source -> steering scale used
    baseline: dict[str, float]  # target -> unsteered EM rate
    em_rate: np.ndarray
    effectiveness: np.ndarray
    effectiveness_low: np.ndarray
    effectiveness_high: np.ndarray
    interval: str
    notes: list[str]


class TransferAnalysis(TransferMatrix):
    """:func:`transfer_analysis`'s result: the matrix, the dose-response curves and the EM rule."""

    dose_response: dict[str, dict[str, object]]
    thresholds: dict[str, float | bool]


def read_results(table: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Read a results table from a DataFrame, ``.csv`` or ``.parquet`` file."""
    if isinstance(table, pd.DataFrame):
        return table.copy()
    path = Path(table)
    if not path.is_file():
        raise DataError(f"{path}: no such results table")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    raise DataError(f"{path}: results tables must be .csv or .parquet")


def em_rates(
    table: pd.DataFrame | str | Path,
    thresholds: Thresholds = Thresholds(),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """EM rate per (source, target, scale) with counts and a Wilson interval.

    Returns columns ``source, target, scale, em_rate, k, n, n_unscored, ci_low, ci_high,
    baseline`` (``baseline`` = unsteered: source in {"", none, baseline, base} or scale == 0).
    """
    df = read_results(table)
    for col in ("source", "target"):
        if col not in df.columns:
            raise DataError(f"results table has no {col!r} column (columns: {list(df.columns)})")
    df["source"] = df["source"].fillna("").astype(str)
    df["target"] = df["target"].astype(str)
    if "scale" not in df.columns:
        df["scale"] = np.nan
    df["scale"] = pd.to_numeric(df["scale"], errors="coerce")
    keys = ["source", "target", "scale"]
    if {"aligned", "coherent"} <= set(df.columns):
        aligned = pd.to_numeric(df["aligned"], errors="coerce")
        coherent = pd.to_numeric(df["coherent"], errors="coerce")
        df = df.assign(
            _em=em_mask(df, thresholds).astype(int),
            _n=1,
            _unscored=(aligned.isna() | coherent.isna()).astype(int),
        )
        out = (
            df.groupby(keys, dropna=False)
            .agg(k=("_em", "sum"), n=("_n", "sum"), n_unscored=("_unscored", "sum"))
            .reset_index()
        )
        out["em_rate"] = out["k"] / out["n"]
    elif "em_rate" in df.columns:
        n = pd.to_numeric(df["n"], errors="coerce") if "n" in df.columns else np.nan
        df = df.assign(_n=n, _k=df["em_rate"] * n, _rate=df["em_rate"])
        g = df.groupby(keys, dropna=False)
        out = g.agg(em_rate=("_rate", "mean"), n=("_n", "sum"), k=("_k", "sum")).reset_index()
        counted = g["_n"].apply(lambda s: bool(s.notna().all())).to_numpy()
        out.loc[~counted, ["n", "k"]] = np.nan
        weighted = counted & (out["n"] > 0).to_numpy()
        out.loc[weighted, "k"] = out.loc[weighted, "k"].round()
        out.loc[weighted, "em_rate"] = out.loc[weighted, "k"] / out.loc[weighted, "n"]
        out["n_unscored"] = 0
    else:
        raise DataError(
            "results table needs per-answer 'aligned' and 'coherent' columns or an 'em_rate' column"
        )
    ci = [
        wilson(int(k), int(n), confidence) if np.isfinite(n) and np.isfinite(k) else (np.nan,) * 2
        for k, n in zip(out["k"], out["n"])
    ]
    out["ci_low"] = [c[0] for c in ci]
    out["ci_high"] = [c[1] for c in ci]
    out["baseline"] = out["source"].str.lower().isin(BASELINE_LABELS) | (out["scale"] == 0)
    return out


def _pooled(rows: pd.DataFrame) -> dict[str, float]:
    """Pool rows into one cell: summed counts when every row has them, else the mean rate."""
    if len(rows) and rows["n"].notna().all() and rows["n"].sum() > 0:
        k, n = float(rows["k"].sum()), float(rows["n"].sum())
        return {"em_rate": k / n, "k": k, "n": n}
    return {"em_rate": float(rows["em_rate"].mean()), "k": math.nan, "n": math.nan}


def dose_response(
    rates: pd.DataFrame, confidence: float = 0.95
) -> tuple[dict[str, dict[str, object]], list[str]]:
    """EM rate against steering scale for every steered ``source -> target`` pair, scales sorted,
    starting at the scale-0 point (the pair's own scale-0 rows, else the target's unsteered rows),
    with notes for every missing scale-0 point and every (pair, scale) cell missing from the grid
    of scales the source was run at."""
    notes: list[str] = []
    curves: dict[str, dict[str, object]] = {}
    steered = rates[~rates["baseline"]]
    unsteered = rates[rates["baseline"]]
    for s, rows in steered.groupby("source", sort=True):
        grid = sorted(rows["scale"].dropna().unique().tolist())
        for t, grp in rows.groupby("target", sort=True):
            pts = {float(sc): _pooled(g) for sc, g in grp.groupby("scale", dropna=True)}
            own0 = unsteered[(unsteered["source"] == s) & (unsteered["target"] == t)]
            base0 = unsteered[unsteered["target"] == t]
            scale0_from = None
            if len(own0):
                pts[0.0], scale0_from = _pooled(own0), "own scale-0 rows"
            elif len(base0):
                pts[0.0], scale0_from = _pooled(base0), "unsteered rows of the target"
            else:
                notes.append(f"dose-response {s}->{t}: no scale-0 (unsteered) rows for {t!r}")
            missing = [sc for sc in grid if sc not in pts]
            for sc in missing:
                notes.append(f"dose-response {s}->{t}: no rows at scale {sc:g} (point missing)")
            xs = sorted(pts)
            ci = [
                wilson(int(pts[x]["k"]), int(pts[x]["n"]), confidence)
                if np.isfinite(pts[x]["n"])
                else (math.nan, math.nan)
                for x in xs
            ]
            curves[f"{s}->{t}"] = {
                "source": s,
                "target": t,
                "scale": xs,
                "em_rate": [pts[x]["em_rate"] for x in xs],
                "n": [pts[x]["n"] for x in xs],
                "ci_low": [c[0] for c in ci],
                "ci_high": [c[1] for c in ci],
                "scale0_from": scale0_from,
                "missing_scales": missing,
            }
    return curves, notes


def transfer_effectiveness(
    rates: pd.DataFrame,
    scale: float | None = None,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> TransferMatrix:
    """Transfer matrix (sources x targets) from an :func:`em_rates` table, with intervals.

    ``scale``: use rows at this steering scale; default: for each source the largest scale it
    was evaluated at on its own domain (the same scale is then used on every target). Baselines
    are the unsteered rates per target (pooled over baseline rows), or 0 with a note when absent.
    """
    steered = rates[~rates["baseline"]]
    base_rows = rates[rates["baseline"]]
    base = {t: _pooled(g) for t, g in base_rows.groupby("target")}
    sources = sorted(steered["source"].unique())
    targets = sorted(set(steered["target"]) | set(sources))
    notes: list[str] = []
    missing_base = [t for t in targets if t not in base]
    if missing_base:
        notes.append(f"no baseline rows for {missing_base}: baseline taken as 0")
    zero = {"em_rate": 0.0, "k": 0.0, "n": math.inf}  # a fixed 0: never resampled
    S, T = len(sources), len(targets)
    E = np.full((S, T), np.nan)
    R = np.full((S, T), np.nan)
    lo, hi = np.full((S, T), np.nan), np.full((S, T), np.nan)
    used_scale: dict[str, float] = {}
    cells: dict[tuple[int, int], dict[str, float]] = {}
    for x, s in enumerate(sources):
        rows = steered[steered["source"] == s]
        own = rows[rows["target"] == s]
        if scale is not None:
            sc = float(scale)
        elif len(own) and own["scale"].notna().any():
            sc = float(own["scale"].max())
        else:
            sc = float(rows["scale"].max()) if rows["scale"].notna().any() else math.nan
        used_scale[s] = sc
        at = rows if math.isnan(sc) else rows[np.isclose(rows["scale"].astype(float), sc)]
        for y, t in enumerate(targets):
            g = at[at["target"] == t]
            if len(g):
                cells[(x, y)] = _pooled(g)
                R[x, y] = cells[(x, y)]["em_rate"]
            else:
                notes.append(f"transfer {s}->{t}: no rows at scale {sc:g}: cell is NaN")
    # One set of resampled cell rates shared by every ratio, so each draw is one consistent world.
    rng = np.random.default_rng(seed)
    draws: dict[object, np.ndarray | None] = {}

    def resampled(key: object, cell: dict[str, float]) -> np.ndarray | None:
        if key not in draws:
            if not np.isfinite(cell["n"]):
                draws[key] = np.full(resamples, cell["em_rate"]) if cell is zero else None
            else:
                n = int(cell["n"])
                draws[key] = rng.binomial(n, cell["k"] / n, resamples) / n if n > 0 else None
        return draws[key]

    tail = (1 - confidence) / 2
    for x, s in enumerate(sources):
        if (x, targets.index(s)) not in cells:
            notes.append(f"source {s!r} was not evaluated on its own domain: row is NaN")
            continue
        own = cells[(x, targets.index(s))]
        b_s = base.get(s, zero)
        denom = own["em_rate"] - b_s["em_rate"]
        if not denom > 0:
            notes.append(
                f"source {s!r} does not raise EM on its own domain (effect {denom:+.3f}): row is NaN"
            )
            continue
        d_own = resampled(("cell", x, s), own)
        d_bs = resampled(("base", s), b_s)
        for y, t in enumerate(targets):
            if (x, y) not in cells:
                continue
            b_t = base.get(t, zero)
            E[x, y] = (cells[(x, y)]["em_rate"] - b_t["em_rate"]) / denom
            if t == s:
                lo[x, y] = hi[x, y] = 1.0  # the ratio of a cell to itself is 1 in every resample
                continue
            d_st, d_bt = resampled(("cell", x, t), cells[(x, y)]), resampled(("base", t), b_t)
            if d_own is None or d_bs is None or d_st is None or d_bt is None:
                notes.append(f"transfer {s}->{t}: no answer counts, so no interval")
                continue
            den = d_own - d_bs
            ok = den > 0
            if (~ok).mean() > tail:
                notes.append(
                    f"transfer {s}->{t}: interval not estimable: the source's own effect is <= 0 "
                    f"in {100 * (~ok).mean():.1f}% of resamples"
                )
                continue
            ratio = (d_st[ok] - d_bt[ok]) / den[ok]
            lo[x, y], hi[x, y] = np.quantile(ratio, [tail, 1 - tail])
    return {
        "sources": sources,
        "targets": targets,
        "scale": used_scale,
        "baseline": {t: float(base.get(t, zero)["em_rate"]) for t in targets},
        "em_rate": R,
        "effectiveness": E,
        "effectiveness_low": lo,
        "effectiveness_high": hi,
        "interval": f"{100 * confidence:g}% percentile interval over {resamples} resamples of "
        "each cell's answers",
        "notes": notes,
    }


def transfer_analysis(
    table: pd.DataFrame | str | Path,
    scale: float | None = None,
    thresholds: Thresholds = Thresholds(),
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> TransferAnalysis:
    """EM rates, the transfer matrix with intervals and the dose-response curves of one table."""
    rates = em_rates(table, thresholds, confidence)
    matrix = transfer_effectiveness(rates, scale, confidence, resamples, seed)
    curves, notes = dose_response(rates, confidence)
    # Same key order as the matrix, then the curves and the thresholds.
    return {
        **matrix,
        "notes": matrix["notes"] + notes,
        "dose_response": curves,
        "thresholds": {
            "aligned_below": thresholds.aligned_below,
            "coherent_above": thresholds.coherent_above,
            "inclusive": thresholds.inclusive,
        },
    }
