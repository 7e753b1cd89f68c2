"""Geometry suite: every statistic on vectors of known geometry, degenerate inputs, nulls, I/O.

Reference values are computed by hand (orthonormal sets, vectors in a plane) or directly from the
vectors in the residual space (vectors realised from a given Gram matrix), independently of the
Gram-matrix formulas that the package uses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from misdirection.errors import (
    ConfigError,
    DataError,
    LayerIndexError,
    MisdirectionError,
    ShapeError,
)
from misdirection.geometry import cosine_matrix, run_suite, validate_vectors
from misdirection.geometry.clustering import adjusted_rand_index, classical_mds, hierarchical
from misdirection.geometry.independence import cluster_cohesion, independence, span_fraction
from misdirection.geometry.nulls import bootstrap, random_cosine_matrices, summarize
from misdirection.geometry.residual import residual_analysis
from misdirection.geometry.similarity import angle_matrix, similarity_summary
from misdirection.geometry.statistics import scalar_statistics
from misdirection.geometry.subspace import pca, reference_projection, spectrum
from misdirection.geometry.transfer import em_rates, transfer_analysis
from misdirection.geometry.triangles import triangle_error_stats, triangle_errors
from misdirection.geometry.vectors import load_clusters, load_samples, load_vectors
from misdirection.intervals import wilson

TOL = 1e-6


def embed(rows: np.ndarray, d: int, seed: int = 0) -> np.ndarray:
    """Rotate k-dimensional rows into R^d with a random orthonormal frame (geometry preserved)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return rows @ q[: rows.shape[1]]


def orthonormal(n: int = 4, d: int = 7) -> np.ndarray:
    norms = np.arange(1, n + 1, dtype=float)  # norms must not matter
    return embed(np.eye(n) * norms[:, None], d)


def planar(thetas_deg, d: int = 6) -> np.ndarray:
    t = np.radians(np.asarray(thetas_deg, dtype=float))
    norms = 1.0 + np.arange(len(t))
    return embed(np.column_stack([np.cos(t), np.sin(t)]) * norms[:, None], d)


GRAM = np.array(
    [
        [1.0, 0.8, 0.7, 0.1, 0.0],
        [0.8, 1.0, 0.6, 0.2, 0.1],
        [0.7, 0.6, 1.0, 0.0, -0.1],
        [0.1, 0.2, 0.0, 1.0, 0.5],
        [0.0, 0.1, -0.1, 0.5, 1.0],
    ]
)


def from_gram(G: np.ndarray = GRAM, d: int = 9) -> np.ndarray:
    """Vectors whose cosine matrix is G: rows of the Cholesky factor, rotated into R^d."""
    return embed(np.linalg.cholesky(G), d, seed=3)


# ---------------------------------------------------------------- similarity, subspace


def test_orthonormal_set_statistics():
    X = orthonormal()
    C = cosine_matrix(X)
    assert np.allclose(C, np.eye(4), atol=TOL)
    assert np.allclose(angle_matrix(C)[~np.eye(4, dtype=bool)], 90.0, atol=TOL)
    s = spectrum(C)
    assert np.allclose(s["singular_values"], 1.0, atol=TOL)
    assert np.allclose(s["energy_fraction"], 0.25, atol=TOL)
    assert s["effective_rank"] == pytest.approx(4.0, abs=TOL)
    # Off-diagonal similarities are all 0: correlation is undefined (documented NaN).
    assert np.isnan(s["rank_k_correlation"]).all()
    assert np.allclose(s["rank_k_relative_error"], np.sqrt((4 - np.arange(1, 5)) / 4), atol=TOL)
    p = pca(C)
    assert np.allclose(p["explained_variance_ratio"], 1 / 3, atol=TOL)
    tri = triangle_errors(C)
    assert np.allclose(tri["pred_diff"], 0.0, atol=TOL) and np.allclose(
        tri["pred_sum"], 180.0, atol=TOL
    )
    assert np.allclose(tri["error"], 90.0, atol=TOL)
    rp = reference_projection(C, [0, 1])
    assert np.allclose(rp["fraction"], [1, 1, 0, 0], atol=TOL)
    # Mean direction m = sum(e_i)/2: u.m = 1/2, residual cosines (0 - 1/4) / (3/4) = -1/3.
    r = residual_analysis(C, range(4))
    assert np.allclose(r["alignment"], 0.5, atol=TOL)
    assert r["mean_before"] == pytest.approx(0.0, abs=TOL)
    assert r["mean_after"] == pytest.approx(-1 / 3, abs=TOL)
    assert r["mean_reduction"] == pytest.approx(1 / 3, abs=TOL)
    h = hierarchical(C)
    assert np.allclose(h["merge_heights_deg"], 90.0, atol=TOL)
    assert math.isnan(h["cophenetic_correlation"])  # all distances equal


def test_planar_vectors_statistics():
    thetas = [0.0, 30.0, 70.0, 100.0]
    C = cosine_matrix(planar(thetas))
    T = angle_matrix(C)
    assert np.allclose(T, np.abs(np.subtract.outer(thetas, thetas)), atol=TOL)
    # Coplanar: every triplet error is 0 and the observed angle equals one prediction.
    tri = triangle_errors(C)
    assert np.allclose(tri["error"], 0.0, atol=TOL)
    stats = triangle_error_stats(C)
    assert stats["mean_error_deg"] == pytest.approx(0.0, abs=TOL)
    assert stats["share_below_5deg"] == pytest.approx(1.0, abs=TOL)
    s = spectrum(C)
    assert np.allclose(s["singular_values"][2:], 0.0, atol=1e-6)
    assert s["rank_k_correlation"][1] == pytest.approx(1.0, abs=TOL)
    assert s["rank_k_relative_error"][1] == pytest.approx(0.0, abs=TOL)
    # Reference (v0, v1): Gram-Schmidt basis is (e1, e2) of the plane, so coords = (cos, sin).
    rp = reference_projection(C, [0, 1])
    t = np.radians(thetas)
    assert np.allclose(rp["coords"], np.column_stack([np.cos(t), np.sin(t)]), atol=TOL)
    assert np.allclose(rp["fraction"], 1.0, atol=TOL)
    assert rp["mean_fraction_others"] == pytest.approx(1.0, abs=TOL)
    # Angles along an arc < 180 deg form a line metric: MDS is exact, axis 1 = angle up to shift.
    m = classical_mds(C)
    assert float(m["stress"]) == pytest.approx(0.0, abs=TOL)
    x = m["coords"][:, 0]
    assert np.allclose(np.abs(x - x[0]), thetas, atol=TOL)
    # Average linkage on the line 0, 30, 70, 100: merges at 30, 30, then mean(70,100,40,70) = 70.
    h = hierarchical(C)
    assert np.allclose(h["merge_heights_deg"], [30, 30, 70], atol=TOL)
    # Cophenetic distances of that tree for pairs (01, 02, 03, 12, 13, 23) vs the angles.
    tree_d, angles = [30, 70, 70, 70, 70, 30], [30, 70, 100, 40, 70, 30]
    assert h["cophenetic_correlation"] == pytest.approx(np.corrcoef(tree_d, angles)[0, 1], abs=TOL)


def test_gram_realised_vectors_match_direct_computation():
    from sklearn.decomposition import PCA

    X = from_gram()
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = cosine_matrix(X)
    assert np.allclose(C, GRAM, atol=TOL)
    s = spectrum(C)
    sv = np.linalg.svd(U, compute_uv=False)
    assert np.allclose(s["singular_values"][: len(sv)], sv, atol=TOL)
    # Rank-k reconstruction directly from the truncated SVD of the vectors.
    Uu, S, Vt = np.linalg.svd(U, full_matrices=False)
    i, j = np.triu_indices(5, 1)
    for k in range(1, 6):
        Rk = (Uu[:, :k] * S[:k]) @ Vt[:k]
        Sk = Rk @ Rk.T
        assert s["rank_k_correlation"][k - 1] == pytest.approx(
            np.corrcoef(Sk[i, j], GRAM[i, j])[0, 1], abs=TOL
        )
        assert s["rank_k_relative_error"][k - 1] == pytest.approx(
            np.linalg.norm(GRAM - Sk) / np.linalg.norm(GRAM), abs=TOL
        )
    # PCA against scikit-learn on the unit vectors themselves.
    sk = PCA().fit(U)
    p = pca(C)
    assert np.allclose(p["explained_variance_ratio"], sk.explained_variance_ratio_[:4], atol=TOL)
    assert np.allclose(p["explained_variance"], sk.explained_variance_[:4], atol=TOL)
    scores = sk.transform(U)[:, :4]
    assert np.allclose(np.abs(p["scores"]), np.abs(scores), atol=TOL)
    loadings = U @ sk.components_[:4].T
    assert np.allclose(np.abs(p["loadings"]), np.abs(loadings), atol=TOL)
    # Summary numbers of the given Gram matrix.
    off = GRAM[i, j]
    summ = similarity_summary(C)
    assert summ["mean_cosine"] == pytest.approx(off.mean(), abs=TOL)
    assert summ["max_cosine"] == pytest.approx(0.8, abs=TOL)
    assert summ["min_cosine"] == pytest.approx(-0.1, abs=TOL)


def test_residual_and_independence_match_vector_space():
    X = from_gram()
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = cosine_matrix(X)
    a, b = [0, 1, 2], [3, 4]
    # Residual: remove the normalised mean of group a from every vector of a.
    m = U[a].mean(0)
    m /= np.linalg.norm(m)
    R = U[a] - np.outer(U[a] @ m, m)
    Rc = cosine_matrix(R)
    r = residual_analysis(C, a)
    assert np.allclose(r["after"], Rc, atol=TOL)
    i, j = np.triu_indices(3, 1)
    assert r["mean_reduction"] == pytest.approx((GRAM[a][:, a][i, j] - Rc[i, j]).mean(), abs=TOL)

    res = independence(C, a, b)
    ma, mb = U[a].mean(0), U[b].mean(0)
    cos_means = ma @ mb / np.linalg.norm(ma) / np.linalg.norm(mb)
    assert res["angle_between_means_deg"] == pytest.approx(
        np.degrees(np.arccos(cos_means)), abs=TOL
    )
    # Span fractions: least-squares projection onto the other cluster's vectors.
    for members, other, key in ((a, b, "span_fraction_a_in_b"), (b, a, "span_fraction_b_in_a")):
        coef, *_ = np.linalg.lstsq(U[other].T, U[members].T, rcond=None)
        proj = (U[other].T @ coef).T
        assert np.allclose(res[key], np.linalg.norm(proj, axis=1), atol=TOL)
    # Cross residual: remove b's mean from a's vectors.
    mb_hat = mb / np.linalg.norm(mb)
    Ra = U[a] - np.outer(U[a] @ mb_hat, mb_hat)
    after = cosine_matrix(Ra)[i, j].mean()
    assert res["residual_a_minus_mean_b"]["mean_after"] == pytest.approx(after, abs=TOL)
    # PC1 ablation: PC1 of a u b (centred PCA), removed from every vector.
    ab = a + b
    pc1 = np.linalg.svd(U[ab] - U[ab].mean(0), full_matrices=False)[2][0]
    Rab = U[ab] - np.outer(U[ab] @ pc1, pc1)
    Cab = cosine_matrix(Rab)
    abl = res["pc1_ablation"]
    assert abl["within_a_after"] == pytest.approx(Cab[:3, :3][i, j].mean(), abs=TOL)
    assert abl["within_b_after"] == pytest.approx(Cab[3, 4], abs=TOL)
    assert abl["between_after"] == pytest.approx(Cab[:3, 3:].mean(), abs=TOL)
    assert abl["within_b_change"] == pytest.approx(Cab[3, 4] - GRAM[3, 4], abs=TOL)
    # Cluster-specific PC1 of a and the variance it explains in b.
    Ac = U[a] - U[a].mean(0)
    _, sa, vta = np.linalg.svd(Ac, full_matrices=False)
    Bc = U[b] - U[b].mean(0)
    assert res["pc1_a_in_b"]["own_variance_ratio"] == pytest.approx(
        sa[0] ** 2 / (sa**2).sum(), abs=TOL
    )
    assert res["pc1_a_in_b"]["other_variance_ratio"] == pytest.approx(
        ((Bc @ vta[0]) ** 2).sum() / (Bc**2).sum(), abs=TOL
    )
    coh = cluster_cohesion(C, {"a": a, "b": b})
    # Pooled within-cluster pairs (0.8, 0.7, 0.6 in a; 0.5 in b) minus the mean between (0.05).
    assert coh["gap"] == pytest.approx(np.mean([0.8, 0.7, 0.6, 0.5]) - 0.05, abs=TOL)


def test_span_fraction_of_vector_inside_span_is_one():
    C = cosine_matrix(planar([0, 40, 80, 120], d=5))
    assert np.allclose(span_fraction(C, [2, 3], [0, 1]), 1.0, atol=TOL)


def test_batched_statistics_equal_single_matrix():
    rng = np.random.default_rng(5)
    Cs = random_cosine_matrices(9, 20, 6, rng)
    cl = {"x": [0, 1, 2], "y": [3, 4, 5, 6]}
    batched = scalar_statistics(Cs, cl, [7, 8])
    for b in range(6):
        single = scalar_statistics(Cs[b], cl, [7, 8])
        for k, v in single.items():
            np.testing.assert_allclose(batched[k][b], v[0], atol=1e-10, err_msg=k)
    # The fast triangle sweep equals the per-triplet computation.
    err = triangle_errors(Cs)["error"]
    fast = triangle_error_stats(Cs)
    assert np.allclose(fast["mean_error_deg"], err.mean(-1), atol=1e-9)
    assert np.allclose(fast["share_below_5deg"], (err < 5).mean(-1), atol=1e-12)


def test_adjusted_rand_index_matches_sklearn():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = rng.integers(0, 4, 30), rng.integers(0, 3, 30)
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert adjusted_rand_index(np.zeros(5), np.zeros(5)) == 1.0


# ---------------------------------------------------------------- degenerate inputs


def test_degenerate_inputs_raise_clear_errors():
    with pytest.raises(ShapeError, match="at least 3 vectors"):
        triangle_errors(cosine_matrix(orthonormal(2)))
    with pytest.raises(DataError, match="'z' is all zeros"):
        validate_vectors({"a": np.ones(4), "z": np.zeros(4)})
    with pytest.raises(ShapeError, match="width 5 but 'a' has width 4"):
        validate_vectors({"a": np.ones(4), "b": np.ones(5)})
    with pytest.raises(DataError, match="NaN"):
        validate_vectors({"a": np.array([1.0, np.nan])})
    with pytest.raises(ShapeError, match="parallel"):
        reference_projection(cosine_matrix(np.array([[1.0, 0], [2.0, 0], [0, 1.0]])), [0, 1])
    vecs = {f"v{i}": x for i, x in enumerate(orthonormal(4))}
    with pytest.raises(ConfigError, match="unknown vector 'nope'"):
        run_suite(vecs, {"a": ["v0", "nope"]}, n_null=0)
    with pytest.raises(ConfigError, match="both cluster"):
        run_suite(vecs, {"a": ["v0", "v1"], "b": ["v1", "v2"]}, n_null=0)
    with pytest.raises(ConfigError, match="unknown vector"):
        run_suite(vecs, reference=["v0", "zz"], n_null=0)
    with pytest.raises(ConfigError, match="at least 2 vectors"):
        run_suite({"a": np.ones(3)}, n_null=0)
    assert issubclass(ShapeError, MisdirectionError)


def test_two_vectors_give_documented_answer():
    res = run_suite({"a": np.array([1.0, 0, 0]), "b": np.array([1.0, 1.0, 0])}, n_null=5, workers=0)
    assert res["triangles"] is None
    assert any("defined for 3 or more vectors; this set has 2" in n for n in res["notes"])
    assert not any("skipped" in n or "failed" in n for n in res["notes"])
    assert res["similarity"]["cosine"][0][1] == pytest.approx(1 / math.sqrt(2), abs=TOL)


# ---------------------------------------------------------------- nulls and bootstrap


def test_random_cosines_have_the_sphere_distribution():
    # For uniform directions in R^d, E[cos^2] = 1/d; both the Bartlett (d >= n) and direct paths.
    rng = np.random.default_rng(0)
    for n, d in ((6, 40), (12, 5)):
        C = random_cosine_matrices(n, d, 3000, rng)
        i, j = np.triu_indices(n, 1)
        assert np.allclose(np.diagonal(C, axis1=1, axis2=2), 1.0)
        assert (C[:, i, j] ** 2).mean() == pytest.approx(1 / d, rel=0.05)
        assert abs(C[:, i, j].mean()) < 0.01


def test_summarize_percentiles_by_hand():
    s = summarize(49.5, np.arange(100.0))
    assert s["percentile"] == pytest.approx(50.0)
    assert s["p_high"] == pytest.approx(51 / 101)
    assert s["p_low"] == pytest.approx(51 / 101)
    tie = summarize(3.0, np.array([1.0, 3.0, 5.0, 7.0]))
    assert tie["percentile"] == pytest.approx(100 * (1 + 0.5) / 4)
    assert summarize(200.0, np.arange(100.0))["percentile"] == 100.0


def test_nulls_separate_real_clusters_from_chance():
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((2, 50))
    X = np.repeat(centres, 4, axis=0) + 0.3 * rng.standard_normal((8, 50))
    vecs = {f"v{i}": X[i] for i in range(8)}
    clusters = {"a": [f"v{i}" for i in range(4)], "b": [f"v{i}" for i in range(4, 8)]}
    res = run_suite(vecs, clusters, n_null=40, workers=0)
    gap = res["statistics"]["clusters.gap"]
    assert gap["random"]["percentile"] == 100.0 and gap["random"]["p_high"] == pytest.approx(1 / 41)
    assert gap["permuted"]["percentile"] == 100.0
    assert res["statistics"]["clustering.adjusted_rand_index"]["observed"] == pytest.approx(1.0)


def test_bootstrap_intervals():
    rng = np.random.default_rng(1)
    X = from_gram()
    names = [f"v{i}" for i in range(5)]
    # Samples whose mean is exactly v0: the interval must contain the observed cosine.
    noise = rng.standard_normal((60, X.shape[1]))
    samples = {"v0": X[0] + noise - noise.mean(0)}
    out = bootstrap(X, names, samples, lambda S: {"c01": S[:, 0, 1]}, draws=100, seed=0)
    assert out["consistency"]["v0"] == pytest.approx(1.0, abs=1e-9)
    assert out["stats"]["c01"]["low"] <= GRAM[0, 1] <= out["stats"]["c01"]["high"]
    assert out["cosine_low"][0, 1] < GRAM[0, 1] < out["cosine_high"][0, 1]
    # Identical rows (pair form): no sampling variance, the interval collapses to the value.
    pair = {"v1": (np.tile(2 * X[1], (5, 1)), np.tile(X[1], (7, 1)))}
    out = bootstrap(X, names, pair, lambda S: {"c01": S[:, 0, 1]}, draws=20, seed=0)
    assert out["stats"]["c01"]["low"] == pytest.approx(GRAM[0, 1], abs=TOL)
    assert out["stats"]["c01"]["high"] == pytest.approx(GRAM[0, 1], abs=TOL)


# ---------------------------------------------------------------- transfer


def test_transfer_effectiveness_by_hand():
    import pandas as pd

    df = pd.DataFrame(
        [
            ("none", "A", 0.0, 0.10),
            ("none", "B", 0.0, 0.20),
            ("A", "A", 4.0, 0.50),
            ("A", "B", 4.0, 0.30),
            ("A", "A", 2.0, 0.30),
            ("A", "B", 2.0, 0.25),
            ("B", "B", 4.0, 0.60),
            ("B", "A", 4.0, 0.10),
        ],
        columns=["source", "target", "scale", "em_rate"],
    )
    res = transfer_analysis(df)
    E = np.array(res["effectiveness"])
    assert res["sources"] == ["A", "B"] and res["targets"] == ["A", "B"]
    assert E[0] == pytest.approx([1.0, (0.30 - 0.20) / (0.50 - 0.10)])
    assert E[1] == pytest.approx([(0.10 - 0.10) / (0.60 - 0.20), 1.0])
    # The curve starts at the scale-0 point (the target's unsteered rate).
    assert res["dose_response"]["A->B"]["scale"] == [0.0, 2.0, 4.0]
    assert res["dose_response"]["A->B"]["em_rate"] == pytest.approx([0.20, 0.25, 0.30])
    assert res["dose_response"]["B->A"]["scale0_from"] == "unsteered rows of the target"
    # B was run at scale 4 only: no missing point; no answer counts: no intervals, said so.
    assert not any("B->A: no rows" in n for n in res["notes"])
    assert any("A->B: no answer counts" in n for n in res["notes"])
    at2 = transfer_analysis(df, scale=2.0)
    assert np.array(at2["effectiveness"])[0, 1] == pytest.approx((0.25 - 0.20) / (0.30 - 0.10))


def test_em_rates_from_judged_answers_and_wilson():
    import pandas as pd

    rows = (
        [("A", "A", 1.0, 10.0, 80.0)] * 3
        + [("A", "A", 1.0, 90.0, 90.0)] * 6
        + [("A", "A", 1.0, np.nan, 90.0)]
    )
    df = pd.DataFrame(rows, columns=["source", "target", "scale", "aligned", "coherent"])
    r = em_rates(df)
    # The package's EM rule and denominator policy (metrics.em_mask): shares over all answers,
    # a null score counts as not EM and is counted in n_unscored.
    assert r["em_rate"].iloc[0] == pytest.approx(3 / 10)
    assert r["n"].iloc[0] == 10 and r["n_unscored"].iloc[0] == 1
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2365931, abs=1e-6) and hi == pytest.approx(0.7634069, abs=1e-6)
    lo, hi = wilson(0, 44)
    assert lo == 0.0 and hi == pytest.approx(0.0803, abs=1e-4)


# ---------------------------------------------------------------- files, suite, CLI


def _write_files(tmp: Path) -> list[str]:
    import torch
    from safetensors.numpy import save_file

    X = from_gram(d=16)
    stack = np.stack([X[0], 2 * X[0], -X[0]]).astype(np.float32)  # [n_layers=3, d], layer 0 = v0
    save_file(
        {"directions": stack},
        str(tmp / "med.safetensors"),
        metadata={"format": "misdirection.directions/1", "method": "mean-diff"},
    )
    np.save(tmp / "fin.npy", X[1])
    torch.save(torch.tensor(X[2]), tmp / "sport.pt")
    np.save(tmp / "code.npy", np.stack([X[3], X[3]]))  # [2, d]: layer 0 = v3
    np.save(tmp / "prof.npy", X[4])
    return [
        str(tmp / "med.safetensors"),
        f"finance={tmp / 'fin.npy'}",
        str(tmp / "sport.pt"),
        str(tmp / "code.npy"),
        str(tmp / "prof.npy"),
    ]


def test_loading_vectors(tmp_path):
    specs = _write_files(tmp_path)
    loaded = load_vectors(specs, layer=0)
    assert list(loaded) == ["med", "finance", "sport", "code", "prof"]
    assert loaded["med"].metadata["method"] == "mean-diff" and loaded["med"].layer == 0
    C = cosine_matrix(np.stack([v.vector for v in loaded.values()]))
    assert np.allclose(C, GRAM, atol=1e-6)
    assert np.allclose(
        load_vectors(specs[:1], layer=-1)["med"].vector,
        -load_vectors(specs[:1], layer=0)["med"].vector,
    )
    with pytest.raises(LayerIndexError, match="valid 0..2"):
        load_vectors(specs[:1])
    with pytest.raises(LayerIndexError, match="out of range"):
        load_vectors(specs[:1], layer=7)
    with pytest.raises(DataError, match="two vectors are named"):
        load_vectors([specs[4], specs[4]])
    with pytest.raises(DataError, match="no such file"):
        load_vectors([str(tmp_path / "missing.npy")])
    (tmp_path / "cl.json").write_text(json.dumps({"a": ["med", "finance"], "b": ["code"]}))
    assert load_clusters(tmp_path / "cl.json") == {"a": ["med", "finance"], "b": ["code"]}
    (tmp_path / "bad.yaml").write_text("a: med\n")
    with pytest.raises(DataError, match="must be a list"):
        load_clusters(tmp_path / "bad.yaml")
    np.save(tmp_path / "s.npy", np.ones((4, 3, 16)))
    name, arr = load_samples(f"med={tmp_path / 's.npy'}", layer=1)
    assert name == "med" and arr.shape == (4, 16)
    from safetensors.numpy import save_file

    pos, neg = np.ones((5, 16), np.float32), np.zeros((3, 16), np.float32)
    save_file({"misaligned": pos, "aligned": neg}, str(tmp_path / "acts.safetensors"))
    _, pair = load_samples(f"fin={tmp_path / 'acts.safetensors'}")
    assert pair[0].shape == (5, 16) and pair[1].shape == (3, 16)


def test_run_suite_end_to_end(tmp_path):
    X = from_gram(d=32)
    vecs = {n: X[i] for i, n in enumerate(["med", "fin", "sport", "code", "prof"])}
    clusters = {"narrow": ["med", "fin", "sport"], "other": ["code", "prof"]}
    import pandas as pd

    table = pd.DataFrame(
        [
            ("none", "med", 0.0, 0.1),
            ("med", "med", 2.0, 0.5),
            ("med", "fin", 2.0, 0.3),
            ("med", "med", 1.0, 0.3),
        ],
        columns=["source", "target", "scale", "em_rate"],
    )
    rng = np.random.default_rng(0)
    # Small per-answer noise: resampling noise shrinks cosines (a bias of bootstrapping noisy means),
    # so with large noise the percentile interval can miss the observed value.
    noise = 0.05 * rng.standard_normal((30, 32))
    res = run_suite(
        vecs,
        clusters,
        tmp_path / "out",
        reference=["med", "code"],
        n_null=30,
        seed=1,
        workers=0,
        transfer=table,
        samples={"fin": X[1] + noise - noise.mean(0)},
        n_boot=20,
    )
    assert res["transfer"]["effectiveness"][0] == pytest.approx([(0.3 - 0.0) / 0.4, 1.0])
    assert any("no baseline rows for ['fin']" in n for n in res["notes"])
    assert res["bootstrap"]["consistency"]["fin"] == pytest.approx(1.0, abs=1e-9)
    lo, hi = res["bootstrap"]["stats"]["similarity.mean_cosine"].values()
    assert lo <= res["statistics"]["similarity.mean_cosine"]["observed"] <= hi
    # The file is plain JSON (no NaN) and holds the same numbers.
    on_disk = json.loads((tmp_path / "out" / "geometry.json").read_text())
    assert on_disk["similarity"]["cosine"] == res["similarity"]["cosine"]
    assert np.allclose(res["similarity"]["cosine"], GRAM, atol=TOL)
    st = res["statistics"]
    assert st["clusters.gap"]["observed"] == pytest.approx(
        np.mean([0.8, 0.7, 0.6, 0.5]) - GRAM[np.ix_([0, 1, 2], [3, 4])].mean(), abs=TOL
    )
    assert st["clusters.gap"]["random"]["n"] == 30 and st["clusters.gap"]["permuted"]["n"] == 30
    assert st["similarity.mean_cosine"]["permuted"] is None
    assert 0 <= st["similarity.mean_cosine"]["random"]["percentile"] <= 100
    assert res["independence"]["narrow|other"]["angle_between_means_deg"] == pytest.approx(
        st["pair[narrow|other].angle_between_means_deg"]["observed"], abs=TOL
    )
    for rel in res["figures"].values():
        png = tmp_path / "out" / rel
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert {
        "cosine_heatmap",
        "spectrum",
        "pca",
        "dendrogram",
        "mds",
        "nulls",
        "reference_projection",
        "transfer",
        "dose_response",
    } <= set(res["figures"])
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "pair[narrow\\|other]" in md and "figures/cosine_heatmap.png" in md
    # Worker processes evaluate the same draws: identical null distributions.
    res2 = run_suite(vecs, clusters, None, reference=["med", "code"], n_null=30, seed=1, workers=2)
    assert res2["figures"] == {} and not (tmp_path / "none").exists()
    for k, v in res["statistics"].items():
        assert res2["statistics"][k] == v, k


def test_cli_geometry(tmp_path):
    from typer.testing import CliRunner

    from misdirection.cli import app

    specs = _write_files(tmp_path)
    (tmp_path / "cl.yaml").write_text("narrow: [med, finance, sport]\nother: [code, prof]\n")
    out = tmp_path / "report"
    r = CliRunner().invoke(
        app,
        [
            "geometry",
            *specs,
            "--layer",
            "0",
            "--clusters",
            str(tmp_path / "cl.yaml"),
            "--reference",
            "med,finance",
            "--n-null",
            "10",
            "--no-figures",
            "--workers",
            "0",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((out / "geometry.json").read_text())
    assert data["names"] == ["med", "finance", "sport", "code", "prof"]
    assert data["sources"]["med"]["method"] == "mean-diff"
    assert data["settings"]["layer"] == 0
    (tmp_path / "bad.yaml").write_text("narrow: [med, ghost]\n")
    r = CliRunner().invoke(
        app,
        [
            "geometry",
            *specs,
            "--layer",
            "0",
            "--clusters",
            str(tmp_path / "bad.yaml"),
            "--out",
            str(out),
        ],
    )
    assert isinstance(r.exception, ConfigError) and "ghost" in str(r.exception)
