"""Subspace structure of a set of directions: SVD spectrum, rank-k reconstruction, PCA, and the
projection of every vector onto the span of reference vectors. All from the cosine matrix ``C``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from misdirection.errors import ShapeError
from misdirection.geometry.similarity import block, check_gram, pair_indices


def _eigh_desc(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam, vec = np.linalg.eigh(M)
    return lam[..., ::-1], vec[..., ::-1]


def centre(C: np.ndarray) -> np.ndarray:
    """Double-centred Gram matrix ``H C H`` (H = I - 11^T/n) of the last two axes."""
    return (
        C - C.mean(-1, keepdims=True) - C.mean(-2, keepdims=True) + C.mean((-1, -2), keepdims=True)
    )


def _pearson_rows(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``A`` [..., K, P] with ``b`` [..., P]; NaN where
    either side is constant."""
    a = A - A.mean(axis=-1, keepdims=True)
    bc = b - b.mean(-1, keepdims=True)
    na = np.sqrt((a * a).sum(axis=-1))
    nb = np.sqrt((bc * bc).sum(-1))[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a @ bc[..., :, None])[..., 0] / (na * nb)
    r[(na < 1e-12) | (nb < 1e-12)] = np.nan
    return r


def spectrum(C: np.ndarray, max_rank: int | None = None) -> dict[str, np.ndarray]:
    """SVD of the stacked unit vectors and rank-k reconstruction of the similarity matrix.

    Singular values are ``sqrt(eig(C))``. For each rank k (up to ``max_rank``, default all), the
    truncated SVD of the unit vectors gives reconstructed vectors whose inner products form
    ``S_k`` (not renormalised); we report the Pearson correlation between the off-diagonal entries
    of ``S_k`` and of ``C`` (NaN when either is constant, e.g. an orthonormal set, or with fewer
    than 3 vectors) and the relative Frobenius error ``||C - S_k|| / ||C||``. ``effective_rank``
    is the participation ratio ``(sum s^2)^2 / sum s^4`` (1 for identical vectors, n for an
    orthonormal set). Works on one matrix or a stack [B, n, n].
    """
    C = check_gram(C, 1, "subspace analysis")
    n = C.shape[-1]
    lam, V = _eigh_desc(C)
    lam = np.clip(lam, 0.0, None)
    K = n if max_rank is None else min(max_rank, n)
    energy = lam / lam.sum(-1, keepdims=True)
    i, j = pair_indices(n)
    # Off-diagonal entries of each rank-1 term lam_k v_k v_k^T, accumulated over k.
    terms = lam[..., None, :K] * V[..., i, :K] * V[..., j, :K]  # [..., P, K]
    recon = np.swapaxes(np.cumsum(terms, axis=-1), -1, -2)  # [..., K, P]
    if i.size:
        corr = _pearson_rows(recon, C[..., i, j])
    else:
        corr = np.full(lam.shape[:-1] + (K,), np.nan)
    sq = lam**2
    tail = np.sqrt(np.clip(np.cumsum(sq[..., ::-1], -1)[..., ::-1], 0.0, None))
    rel_err = np.concatenate([tail[..., 1:], np.zeros(lam.shape[:-1] + (1,))], -1)
    rel_err = rel_err / np.sqrt(sq.sum(-1, keepdims=True))
    return {
        "singular_values": np.sqrt(lam),
        "energy_fraction": energy,
        "cumulative_energy": np.cumsum(energy, -1),
        "effective_rank": lam.sum(-1) ** 2 / sq.sum(-1),
        "rank_k_correlation": corr,
        "rank_k_relative_error": rel_err[..., :K],
    }


def pca_ratios(C: np.ndarray, k: int = 2) -> np.ndarray:
    """Explained-variance ratios of the first ``k`` PCs (as :func:`pca`), for a stack [..., n, n]."""
    lam = np.clip(np.linalg.eigvalsh(centre(C))[..., ::-1], 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return lam[..., : min(k, C.shape[-1] - 1)] / lam.sum(-1, keepdims=True)


def pca(C: np.ndarray, n_components: int | None = None) -> dict[str, np.ndarray]:
    """PCA over the unit vectors (rows = vectors, centred), from ``C`` alone.

    Returns ``explained_variance`` (sample variance, ddof=1, as scikit-learn), its ``ratio``,
    ``scores`` [n, k] (coordinates of each centred vector on each PC) and ``loadings`` [n, k]
    (cosine between each unit vector and each PC axis). Sign convention: each PC is flipped so
    that its largest-magnitude score is positive. All vectors identical: ratios are NaN.
    """
    C = check_gram(C, 2, "PCA")
    n = C.shape[0]
    lam, V = _eigh_desc(centre(C))
    lam = np.clip(lam, 0.0, None)
    keep = n - 1 if n_components is None else min(n_components, n - 1)
    lam, V = lam[:keep], V[:, :keep]
    total = lam.sum()
    pos = lam > 1e-12 * max(total, 1e-300)
    scores = V * np.sqrt(lam)
    with np.errstate(invalid="ignore", divide="ignore"):
        loadings = np.where(pos, (C @ V) / np.sqrt(np.where(pos, lam, 1.0)), 0.0)
    # Deterministic signs (the same rule as scikit-learn's svd_flip on the scores).
    pick = np.argmax(np.abs(scores), axis=0)
    signs = np.sign(scores[pick, np.arange(keep)])
    signs[signs == 0] = 1.0
    scores, loadings, V = scores * signs, loadings * signs, V * signs
    ratio = lam / total if total > 0 else np.full(keep, np.nan)
    return {
        "explained_variance": lam / (n - 1),
        "explained_variance_ratio": ratio,
        "scores": scores,
        "loadings": loadings,
        "eigvecs": V,
    }


def reference_projection(
    C: np.ndarray, reference: Sequence[int], norms: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Projection of every unit vector onto the span of the reference vectors (usually a pair).

    ``coords`` are coordinates in the orthonormal basis obtained by Gram-Schmidt on the references
    in order (axis 1 = first reference); ``fraction`` = norm of the projection of the unit vector
    (1 = inside the span, 0 = orthogonal); ``angle_to_span_deg`` = arccos(fraction); with ``norms``
    also ``magnitude`` = raw norm x fraction. Linearly dependent references raise ShapeError.
    """
    C = check_gram(C, 1, "reference projection")
    ref = list(reference)
    if len(ref) == 0 or len(set(ref)) != len(ref):
        raise ShapeError(f"reference vectors must be distinct and non-empty, got indices {ref}")
    G = block(C, ref)
    try:
        L = np.linalg.cholesky(G)
        if np.min(np.diagonal(L, axis1=-2, axis2=-1)) < 1e-6:
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        raise ShapeError(
            "the reference vectors are (nearly) parallel, so they do not span a "
            f"{len(ref)}-dimensional subspace"
        ) from None
    coords = np.swapaxes(np.linalg.solve(L, C[..., ref, :]), -1, -2)  # [..., n, len(ref)]
    frac = np.clip(np.sqrt((coords**2).sum(-1)), 0.0, 1.0)
    out: dict[str, np.ndarray] = {
        "coords": coords,
        "fraction": frac,
        "angle_to_span_deg": np.degrees(np.arccos(frac)),
    }
    if norms is not None:
        out["magnitude"] = np.asarray(norms) * frac
    others = [k for k in range(C.shape[-1]) if k not in ref]
    out["mean_fraction_others"] = (
        frac[..., others].mean(-1) if others else np.full(C.shape[:-2], np.nan)
    )
    return out
