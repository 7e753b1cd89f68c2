"""Hierarchical clustering and 2-D multidimensional scaling of directions.

Distances are angles in degrees (``arccos`` of the cosine), so merge heights read as angles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NotRequired, TypedDict

import numpy as np
from scipy.cluster.hierarchy import cophenet, fcluster, leaves_list, linkage
from scipy.spatial.distance import squareform

from misdirection.geometry.similarity import angle_matrix, check_gram
from misdirection.geometry.subspace import centre

NAN = float("nan")


class Tree(TypedDict):
    """:func:`hierarchical`'s result."""

    method: str
    distance: str
    linkage: np.ndarray
    merge_heights: np.ndarray
    leaf_order: np.ndarray
    cophenetic_correlation: float
    merge_heights_deg: NotRequired[np.ndarray]  # angle distance only


def angular_distances(C: np.ndarray) -> np.ndarray:
    """Angle matrix in degrees with an exact zero diagonal (last two axes)."""
    D = angle_matrix(C)
    D = 0.5 * (D + np.swapaxes(D, -1, -2))
    idx = np.arange(D.shape[-1])
    D[..., idx, idx] = 0.0
    return D


def hierarchical(C: np.ndarray, method: str = "average", distance: str = "angle") -> Tree:
    """Agglomerative clustering (scipy ``linkage``, UPGMA by default).

    ``distance``: ``"angle"`` (degrees, ours) or ``"one_minus_cos"`` (the pre-print's). The two
    give different heights, not just different units: an average of angles is not the angle of
    an average of cosines. Returns the scipy ``linkage`` matrix, the ``merge_heights`` (in the
    distance's unit, ascending; also as ``merge_heights_deg`` for angles), the dendrogram
    ``leaf_order`` and the ``cophenetic_correlation`` (how faithfully the tree keeps the
    distances; NaN with fewer than 3 vectors or when all distances are equal).
    """
    C = check_gram(C, 2, "hierarchical clustering")
    if distance == "angle":
        D = angular_distances(C)
    elif distance == "one_minus_cos":
        D = 1.0 - np.clip(C, -1.0, 1.0)
        D = 0.5 * (D + D.T)
        np.fill_diagonal(D, 0.0)
    else:
        raise ValueError(f"distance must be 'angle' or 'one_minus_cos', got {distance!r}")
    cond = squareform(D, checks=False)
    Z = linkage(cond, method=method)
    # Equal distances (up to rounding) make the correlation undefined: NaN, documented.
    spread = np.ptp(cond) > 1e-9 * max(1.0, float(cond.max()))
    coph = float(cophenet(Z, cond)[0]) if C.shape[0] >= 3 and spread else NAN
    out: Tree = {
        "method": method,
        "distance": distance,
        "linkage": Z,
        "merge_heights": Z[:, 2].copy(),
        "leaf_order": leaves_list(Z),
        "cophenetic_correlation": coph,
    }
    if distance == "angle":
        out["merge_heights_deg"] = Z[:, 2].copy()
    return out


def cut_tree(Z: np.ndarray, k: int) -> np.ndarray:
    """Flat cluster labels (1..k) from cutting the tree into ``k`` clusters."""
    return fcluster(Z, t=k, criterion="maxclust")


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie), same value as scikit-learn's
    ``adjusted_rand_score``; written with numpy because the permutation null calls it hundreds
    of times and scikit-learn's input validation dominates at this size. 1.0 when both
    labelings are a single cluster or all singletons (as scikit-learn)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)

    def comb(x: np.ndarray) -> float:  # number of pairs within cells
        return float((x * (x - 1) / 2.0).sum())

    sum_ij, sum_a, sum_b = comb(table), comb(table.sum(1)), comb(table.sum(0))
    total = comb(np.array([float(len(a))]))
    expected = sum_a * sum_b / total if total else 0.0
    max_index = 0.5 * (sum_a + sum_b)
    if max_index == expected:
        return 1.0
    return float((sum_ij - expected) / (max_index - expected))


def agreement_with_clusters(Z: np.ndarray, clusters: Mapping[str, Sequence[int]], n: int) -> float:
    """Adjusted Rand index between the given clusters and the tree cut into as many clusters,
    over the clustered vectors only (1 = the tree recovers the clusters exactly)."""
    members = [i for m in clusters.values() for i in m]
    truth = np.empty(n, dtype=int)
    for c, m in enumerate(clusters.values()):
        truth[list(m)] = c
    pred = cut_tree(Z, len(clusters))
    return adjusted_rand_index(truth[members], pred[members])


def classical_mds(C: np.ndarray, n_components: int = 2) -> dict[str, np.ndarray]:
    """Classical (Torgerson) MDS of the angular distances, ``n_components`` dimensions.

    Same algorithm as scikit-learn's ``ClassicalMDS`` (eigendecomposition of the double-centred
    squared distances), written with numpy because it is ~10x faster per call and works on stacks,
    which matters for the null baselines. ``stress`` is Kruskal's stress-1 of the embedding
    (0 = distances kept exactly); ``positive_eigen_share`` is the share of the positive eigenvalue
    mass that the kept axes hold. Axes are signed so that the largest-magnitude coordinate is
    positive.
    """
    C = check_gram(C, 2, "MDS")
    D = angular_distances(C)
    n = D.shape[-1]
    lam, V = np.linalg.eigh(-0.5 * centre(D**2))
    lam, V = lam[..., ::-1], V[..., ::-1]
    k = min(n_components, n)
    lk = np.clip(lam[..., :k], 0.0, None)
    Y = V[..., :k] * np.sqrt(lk)[..., None, :]
    pick = np.argmax(np.abs(Y), axis=-2)[..., None, :]
    signs = np.sign(np.take_along_axis(Y, pick, axis=-2))
    Y = Y * np.where(signs == 0, 1.0, signs)
    diff = Y[..., :, None, :] - Y[..., None, :, :]
    E = np.sqrt((diff**2).sum(-1))
    denom = (D**2).sum((-1, -2))
    pos = np.where(lam > 0, lam, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        stress = np.where(
            denom > 0, np.sqrt(((E - D) ** 2).sum((-1, -2)) / np.where(denom > 0, denom, 1)), 0.0
        )
        share = np.where(pos > 0, lk.sum(-1) / np.where(pos > 0, pos, 1), np.nan)
    return {"coords": Y, "stress": stress, "positive_eigen_share": share}
