"""Pairwise cosine similarity and angles.

Every analysis in this package is a function of the cosine (Gram) matrix ``C`` of the unit vectors:
all the statistics are invariant under rotations of the residual space, so ``C`` carries all the
information. Working on ``C`` (n x n) instead of the vectors (n x d) is also what makes the null
baselines cheap (see :mod:`misdirection.geometry.nulls`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from misdirection.errors import ShapeError


def cosine_matrix(X: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows of ``X`` ([n, d], rows non-zero) as [n, n]."""
    X = np.asarray(X, dtype=np.float64)
    U = X / np.linalg.norm(X, axis=-1, keepdims=True)
    C = U @ np.swapaxes(U, -1, -2)
    # Exact ones on the diagonal and symmetry remove rounding noise that arccos would amplify.
    C = 0.5 * (C + np.swapaxes(C, -1, -2))
    idx = np.arange(C.shape[-1])
    C[..., idx, idx] = 1.0
    return np.clip(C, -1.0, 1.0)


def angle_matrix(C: np.ndarray, degrees: bool = True) -> np.ndarray:
    """Angles between the vectors (degrees by default) from their cosine matrix."""
    A = np.arccos(np.clip(C, -1.0, 1.0))
    return np.degrees(A) if degrees else A


def check_gram(C: np.ndarray, min_n: int = 1, what: str = "analysis") -> np.ndarray:
    """Return ``C`` as float64 after checking it is a square cosine matrix (or a stack of them,
    [..., n, n], as the null baselines pass) with at least ``min_n`` rows."""
    C = np.asarray(C, dtype=np.float64)
    if C.ndim < 2 or C.shape[-1] != C.shape[-2]:
        raise ShapeError(f"{what}: expected a square cosine matrix, got shape {list(C.shape)}")
    if C.shape[-1] < min_n:
        raise ShapeError(f"{what} needs at least {min_n} vectors, got {C.shape[-1]}")
    return C


@lru_cache(maxsize=64)
def pair_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def upper(M: np.ndarray) -> np.ndarray:
    """Off-diagonal upper-triangle entries (i < j) of the last two axes, row-major order."""
    i, j = pair_indices(M.shape[-1])
    return M[..., i, j]


def block(M: np.ndarray, rows, cols=None) -> np.ndarray:
    """Sub-matrix ``M[..., rows, cols]`` of the last two axes (works on stacks)."""
    r = np.asarray(rows, dtype=np.intp)
    c = r if cols is None else np.asarray(cols, dtype=np.intp)
    return M[..., r[:, None], c[None, :]]


def similarity_summary(C: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, mean |.|, min and max of the off-diagonal cosines and the mean angle (degrees).

    Values are 0-d arrays for one matrix, [B] arrays for a stack; NaN with fewer than 2 vectors.
    """
    C = check_gram(C)
    vals = upper(C)
    if vals.shape[-1] == 0:
        nan = np.full(C.shape[:-2], np.nan)
        return {
            k: nan
            for k in (
                "mean_cosine",
                "mean_abs_cosine",
                "min_cosine",
                "max_cosine",
                "mean_angle_deg",
            )
        }
    return {
        "mean_cosine": vals.mean(-1),
        "mean_abs_cosine": np.abs(vals).mean(-1),
        "min_cosine": vals.min(-1),
        "max_cosine": vals.max(-1),
        "mean_angle_deg": np.degrees(np.arccos(np.clip(vals, -1, 1))).mean(-1),
    }


def top_pairs(C: np.ndarray, names: list[str], k: int = 10) -> list[dict[str, float | str]]:
    """The ``k`` most similar pairs, most similar first."""
    i, j = np.triu_indices(C.shape[0], k=1)
    vals = C[i, j]
    order = np.argsort(-vals, kind="stable")[:k]
    return [
        {
            "a": names[i[o]],
            "b": names[j[o]],
            "cosine": float(vals[o]),
            "angle_deg": float(np.degrees(np.arccos(np.clip(vals[o], -1, 1)))),
        }
        for o in order
    ]
