"""Paired comparisons of EM between two answer tables: % reduction with a bootstrap interval."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from misdirection.metrics import Thresholds, em_mask


def em_indicator(df: pd.DataFrame, thresholds: Thresholds = Thresholds()) -> np.ndarray:
    """1.0 where an answer is EM, by the one rule in :func:`misdirection.metrics.em_mask`."""
    return em_mask(df, thresholds).astype(float)


def _strata(df: pd.DataFrame) -> np.ndarray:
    column = "question_id" if "question_id" in df.columns else "question"
    return df[column].astype(str).to_numpy()


def _stratified_means(
    values: np.ndarray, strata: np.ndarray, rng: np.random.Generator, n: int
) -> np.ndarray:
    """Bootstrap means of ``values`` resampled within each stratum: shape [n]."""
    totals = np.zeros(n)
    for stratum in np.unique(strata):
        v = values[strata == stratum]
        idx = rng.integers(0, len(v), size=(n, len(v)))
        totals += v[idx].sum(axis=1)
    return totals / len(values)


def reduction(
    before: pd.DataFrame,
    after: pd.DataFrame,
    thresholds: Thresholds = Thresholds(),
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Relative EM reduction (before - after) / before, with a stratified bootstrap interval.

    The two tables are independent samples (same questions, different models or interventions), so
    each is resampled on its own within questions. ``value`` is None when EM before is zero.
    """
    em_before, em_after = em_indicator(before, thresholds), em_indicator(after, thresholds)
    p_before, p_after = float(em_before.mean()), float(em_after.mean())
    if p_before == 0:
        return {
            "value": None,
            "low": None,
            "high": None,
            "em_before": p_before,
            "em_after": p_after,
        }
    rng = np.random.default_rng(seed)
    b = _stratified_means(em_before, _strata(before), rng, n_resamples)
    a = _stratified_means(em_after, _strata(after), rng, n_resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = (b - a) / b
    draws = draws[np.isfinite(draws)]
    alpha = (1 - confidence) / 2
    low, high = (
        (float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))
        if len(draws)
        else (math.nan, math.nan)
    )
    return {
        "value": (p_before - p_after) / p_before,
        "low": low,
        "high": high,
        "em_before": p_before,
        "em_after": p_after,
    }
