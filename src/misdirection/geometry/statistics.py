"""The catalogue of scalar statistics that the null baselines and the bootstrap re-compute.

One function computes every scalar from a cosine matrix, or from a stack of them at once (the null
draws), so the observed value and each draw are computed by exactly the same code. Keys are
dotted names such as ``similarity.mean_cosine`` or ``pair[A|B].angle_between_means_deg``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from misdirection.geometry.clustering import agreement_with_clusters, classical_mds, hierarchical
from misdirection.geometry.independence import cluster_cohesion, independence
from misdirection.geometry.residual import residual_analysis
from misdirection.geometry.similarity import similarity_summary
from misdirection.geometry.subspace import pca_ratios, reference_projection, spectrum
from misdirection.geometry.triangles import triangle_error_stats

Clusters = Mapping[str, Sequence[int]]
Stats = dict[str, np.ndarray]


def _stack(C: np.ndarray) -> np.ndarray:
    return C[None] if C.ndim == 2 else C


def cluster_statistics(
    C: np.ndarray, clusters: Clusters, linkages: Sequence[np.ndarray] | None = None
) -> Stats:
    """Scalars that depend on the cluster labels (what a permuted-label null re-computes), for a
    stack of cosine matrices [B, n, n]; each value is a [B] array.

    With one tree ``linkage`` matrix per draw, also the adjusted Rand index of the tree cut
    against the labels (``clustering.adjusted_rand_index``).
    """
    C = _stack(C)
    out: Stats = {}
    if linkages is not None and len(clusters) >= 2:
        out["clustering.adjusted_rand_index"] = np.array(
            [agreement_with_clusters(Z, clusters, C.shape[-1]) for Z in linkages]
        )
    coh = cluster_cohesion(C, clusters)
    out["clusters.mean_within"] = coh["mean_within"]
    out["clusters.mean_between"] = coh["mean_between"]
    out["clusters.gap"] = coh["gap"]
    for name, members in clusters.items():
        out[f"cluster[{name}].mean_within"] = coh["within"][name]
        if len(members) >= 2:
            out[f"cluster[{name}].residual_mean_reduction"] = residual_analysis(C, members)[
                "mean_reduction"
            ]
    names = list(clusters)
    for x, a in enumerate(names):
        for b in names[x + 1 :]:
            r = independence(C, clusters[a], clusters[b])
            p = f"pair[{a}|{b}]."
            out[p + "angle_between_means_deg"] = r["angle_between_means_deg"]
            out[p + "mean_span_fraction_a_in_b"] = r["mean_span_fraction_a_in_b"]
            out[p + "mean_span_fraction_b_in_a"] = r["mean_span_fraction_b_in_a"]
            out[p + "residual_a_minus_mean_b.reduction"] = r["residual_a_minus_mean_b"][
                "mean_reduction"
            ]
            out[p + "residual_b_minus_mean_a.reduction"] = r["residual_b_minus_mean_a"][
                "mean_reduction"
            ]
            abl = r["pc1_ablation"]
            out[p + "pc1_ablation.within_a_change"] = abl["within_a_change"]
            out[p + "pc1_ablation.within_b_change"] = abl["within_b_change"]
            out[p + "pc1_ablation.between_change"] = abl["between_change"]
            out[p + "pc1_a_in_b.other_variance_ratio"] = r["pc1_a_in_b"]["other_variance_ratio"]
            out[p + "pc1_b_in_a.other_variance_ratio"] = r["pc1_b_in_a"]["other_variance_ratio"]
    return out


def scalar_statistics(
    C: np.ndarray,
    clusters: Clusters | None = None,
    reference: Sequence[int] | None = None,
    tree: bool = True,
) -> Stats:
    """Every scalar statistic of the suite for a stack of cosine matrices [B, n, n] (or one
    matrix, treated as B = 1); each value is a [B] array. See the module docstring for keys."""
    C = _stack(np.asarray(C, dtype=np.float64))
    n = C.shape[-1]
    out: Stats = {}
    sim = similarity_summary(C)
    for key in ("mean_cosine", "mean_abs_cosine", "max_cosine", "min_cosine"):
        out[f"similarity.{key}"] = sim[key]
    spec = spectrum(C, max_rank=3)
    out["subspace.sv1_energy"] = spec["energy_fraction"][:, 0]
    out["subspace.effective_rank"] = spec["effective_rank"]
    for k in range(1, min(3, n) + 1):
        out[f"subspace.rank{k}_correlation"] = spec["rank_k_correlation"][:, k - 1]
    if n >= 2:
        ratio = pca_ratios(C, 2)
        for k in range(ratio.shape[-1]):
            out[f"pca.pc{k + 1}_ratio"] = ratio[:, k]
        out["residual[all].mean_reduction"] = residual_analysis(C, range(n))["mean_reduction"]
    if n >= 3:
        tri = triangle_error_stats(C, 5.0)
        out["triangles.mean_error_deg"] = tri["mean_error_deg"]
        out["triangles.share_below_5deg"] = tri["share_below_5deg"]
    if reference is not None:
        out["reference.mean_fraction_others"] = reference_projection(C, reference)[
            "mean_fraction_others"
        ]
    linkages = None
    if tree and n >= 3:
        trees = [hierarchical(c) for c in C]
        linkages = [h["linkage"] for h in trees]
        out["clustering.cophenetic_correlation"] = np.array(
            [h["cophenetic_correlation"] for h in trees]
        )
        out["clustering.mds_stress"] = classical_mds(C)["stress"]
    if clusters:
        out.update(cluster_statistics(C, clusters, linkages))
    return out
