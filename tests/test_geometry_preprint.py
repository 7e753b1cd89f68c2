"""The pre-print's definitions, Figure 3, forced-by-construction warnings, per-vector layers and
transfer intervals, each against values computed by hand in the residual space (vectors realised
from a Gram matrix), independently of the Gram-matrix formulas the package uses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from misdirection.errors import ConfigError
from misdirection.geometry import run_suite
from misdirection.geometry.base_similarity import base_similarity
from misdirection.geometry.clustering import hierarchical
from misdirection.geometry.independence import independence
from misdirection.geometry.preprint import (
    PREPRINT_COSINES,
    PREPRINT_VECTORS,
    global_pc1_removal,
    gram_matrix,
    own_mean_triplet,
    relative_reduction,
    span_variance,
    vectors_from_gram,
)
from misdirection.geometry.similarity import cosine_matrix
from misdirection.geometry.transfer import em_rates, transfer_analysis
from misdirection.geometry.vectors import (
    load_groupings,
    load_layer_table,
    load_vectors,
    parse_spec,
    read_vectors_file,
)
from misdirection.metrics import Thresholds

TOL = 1e-6
NAMES = list(PREPRINT_VECTORS)
REPORTED = PREPRINT_COSINES
UNREPORTED = 0.17  # the example's choice for the 8 finance/sports cross pairs
CLUSTERS = {
    "medical": ["medical", "medical_rep"],
    "finance_sports": ["finance", "sports"],
    "stylistic": ["profanity", "malicious"],
}


def gram() -> np.ndarray:
    return gram_matrix(NAMES, REPORTED, UNREPORTED)


def unit_vectors(d: int = 40) -> np.ndarray:
    """Unit vectors with cosine matrix gram(), rotated into R^d."""
    return vectors_from_gram(gram(), d, seed=1)


def remove(U: np.ndarray, m: np.ndarray) -> np.ndarray:
    m = m / np.linalg.norm(m)
    return U - np.outer(U @ m, m)


def idx(*names: str) -> list[int]:
    return [NAMES.index(n) for n in names]


# ---------------------------------------------------------------- definitions


def test_relative_reduction_by_hand():
    # (1 - 0.25/0.5) + (1 - 0.4/0.2) = 0.5 - 1 -> mean -0.25 = -25%; a zero before is skipped.
    assert relative_reduction(np.array([0.5, -0.2, 0.0]), np.array([-0.25, -0.4, 0.3])) == (
        pytest.approx(-25.0, abs=TOL)
    )
    assert np.isnan(relative_reduction(np.array([0.0]), np.array([0.1])))


def test_preprint_triplet_after_cosines_and_reduction():
    U = unit_vectors()
    t = idx("profanity", "malicious", "medical")
    R = remove(U[t], U[t].mean(0))
    A = cosine_matrix(R)
    res = own_mean_triplet(cosine_matrix(U), t, NAMES, width=40, draws=50)
    after = res["after"]
    # By hand in the residual space, to 1e-6 ...
    assert after["profanity~malicious"] == pytest.approx(A[0, 1], abs=TOL)
    assert after["profanity~medical"] == pytest.approx(A[0, 2], abs=TOL)
    assert after["malicious~medical"] == pytest.approx(A[1, 2], abs=TOL)
    # ... and the pre-print's published after-cosines and reduction.
    assert after["profanity~malicious"] == pytest.approx(-0.157, abs=5e-4)
    assert after["profanity~medical"] == pytest.approx(-0.701, abs=5e-4)
    assert after["malicious~medical"] == pytest.approx(-0.594, abs=5e-4)
    before = np.array([0.412, -0.235, -0.081])
    hand = 100 * np.mean(1 - np.abs(A[[0, 0, 1], [1, 2, 2]]) / np.abs(before))
    assert res["relative_reduction_pct"] == pytest.approx(hand, abs=TOL)
    assert res["relative_reduction_pct"] == pytest.approx(-256.7, abs=0.1)
    # Ours: mean(before) - mean(after) in cosine units.
    assert res["difference"] == pytest.approx(
        before.mean() - A[[0, 0, 1], [1, 2, 2]].mean(), abs=TOL
    )
    assert res["difference"] == pytest.approx(0.516, abs=5e-4)
    # What construction forces: mean after in [-1/2, -1/3); ceiling 1 - 1/(3 * 0.412).
    assert -0.5 <= res["mean_after"] < -1 / 3
    assert res["relative_ceiling_pct"] == pytest.approx(100 * (1 - 1 / (3 * 0.412)), abs=TOL)
    null = res["null"]["mean_after"]
    assert -0.5 <= null["p2_5"] and null["p97_5"] < -1 / 3


def test_own_mean_removal_is_forced():
    rng = np.random.default_rng(3)
    for _ in range(20):
        X = rng.standard_normal((3, 7)) + rng.standard_normal(7)  # any triplet, shared part too
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        A = cosine_matrix(remove(U, U.mean(0)))
        m = A[[0, 0, 1], [1, 2, 2]].mean()
        assert -0.5 - 1e-12 <= m < -1 / 3
        two = cosine_matrix(remove(U[:2], U[:2].mean(0)))
        assert two[0, 1] == pytest.approx(-1.0, abs=1e-9)


def test_global_pc1_removal_matches_vector_space():
    from sklearn.decomposition import PCA

    U = unit_vectors()
    C = cosine_matrix(U)
    pc = PCA().fit(U)
    R = cosine_matrix(remove(U, pc.components_[0]))
    cl = {c: idx(*m) for c, m in CLUSTERS.items()}
    g = global_pc1_removal(C, cl, NAMES)
    assert g["pc1_variance_ratio"] == pytest.approx(pc.explained_variance_ratio_[0], abs=TOL)
    for c, m in cl.items():
        assert g["within"][c]["after"] == pytest.approx(R[m[0], m[1]], abs=TOL)
        assert g["within"][c]["change"] == pytest.approx(R[m[0], m[1]] - C[m[0], m[1]], abs=TOL)
    # With the unreported pairs at 0.17: the pre-print's PC1 share and finance-sports change.
    assert g["pc1_variance_ratio"] == pytest.approx(0.485, abs=5e-4)
    assert g["within"]["finance_sports"]["change"] == pytest.approx(-0.002, abs=5e-4)


def test_span_variance_cross_variance_and_cluster_angle():
    U = unit_vectors()
    C = cosine_matrix(U)
    a, b = idx("medical", "medical_rep"), idx("profanity", "malicious")
    coef, *_ = np.linalg.lstsq(U[b].T, U[a].T, rcond=None)
    proj = (U[b].T @ coef).T
    share = 100 * (np.linalg.norm(proj, axis=1) ** 2)
    assert np.allclose(span_variance(C, a, b), share, atol=TOL)
    assert share[0] == pytest.approx(5.5526, abs=1e-3)  # the abstract's "5.6%"
    # Centred PCA of two-member clusters: the same cross-variance both ways.
    ind = independence(C, a, b)
    d1, d2 = U[a[0]] - U[a[1]], U[b[0]] - U[b[1]]
    hand = (d1 @ d2) ** 2 / (d1 @ d1) / (d2 @ d2)
    assert ind["pc1_a_in_b"]["other_variance_ratio"] == pytest.approx(hand, abs=TOL)
    assert ind["pc1_b_in_a"]["other_variance_ratio"] == pytest.approx(hand, abs=TOL)
    assert hand == pytest.approx(0.016706, abs=1e-6)
    ma, mb = U[a].mean(0), U[b].mean(0)
    angle = np.degrees(np.arccos(ma @ mb / np.linalg.norm(ma) / np.linalg.norm(mb)))
    assert ind["angle_between_means_deg"] == pytest.approx(angle, abs=TOL)
    assert angle == pytest.approx(101.70, abs=5e-3)  # not the pre-print's 100.2


def test_merge_heights_one_minus_cos_by_hand():
    h = hierarchical(gram(), distance="one_minus_cos")
    # Pairs merge at 1 - cos; then average linkage: 1 - 0.17, then the mean of 4 x 0.83 and
    # 4 x (1 + 0.164).
    hand = [1 - 0.853, 1 - 0.746, 1 - 0.412, 1 - UNREPORTED, (4 * 0.83 + 4 * 1.164) / 8]
    assert np.allclose(h["merge_heights"], hand, atol=TOL)
    deg = hierarchical(gram())["merge_heights_deg"]
    assert deg[0] == pytest.approx(np.degrees(np.arccos(0.853)), abs=TOL)


def test_suite_labels_both_definitions_and_warns(tmp_path):
    X = unit_vectors() * np.arange(1, 7)[:, None]  # norms must not matter
    res = run_suite(
        dict(zip(NAMES, X)),
        CLUSTERS,
        tmp_path,
        triplets=[["profanity", "malicious", "medical"]],
        n_null=20,
        workers=0,
        figures=False,
    )
    pp = res["preprint"]
    assert pp["triplets"][0]["relative_reduction_pct"] == pytest.approx(-256.7, abs=0.1)
    assert pp["own_mean_residual"]["medical"]["mean_after"] == pytest.approx(-1.0, abs=TOL)
    assert pp["own_mean_residual"]["medical"]["relative_reduction_pct"] == pytest.approx(
        100 * (1 - 1 / 0.853), abs=TOL
    )
    rec = pp["triplet_reconstruction"][0]["rank_k_correlation"]
    assert rec[-1] == pytest.approx(1.0, abs=TOL)
    warn = " ".join(res["forced_by_construction"])
    assert "cluster 'medical' has two members" in warn
    assert "1/(n-1) = 20.0%" in warn
    md = (tmp_path / "summary.md").read_text()
    assert (
        "pre-print: mean of 1 - \\|after\\|/\\|before\\|" in md
        and "misdirection: mean(before)" in md
    )
    assert "Test 4 (pre-print)" in md and "Forced by construction" in md
    ours = run_suite(dict(zip(NAMES, X)), CLUSTERS, n_null=0, workers=0, definitions="ours")
    assert ours["preprint"] is None
    with pytest.raises(ConfigError, match="definitions must be"):
        run_suite(dict(zip(NAMES, X)), n_null=0, definitions="theirs")
    with pytest.raises(ConfigError, match="unknown vector"):
        run_suite(dict(zip(NAMES, X)), n_null=0, triplets=[["medical", "x", "sports"]])


# ---------------------------------------------------------------- Figure 3


def synthetic_bases(L: int = 6, d: int = 30):
    """A base direction per layer, and vectors at known angles to it: v = cos t b + sin t e."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((L, d))
    angles = {"a1": 10.0, "a2": 30.0, "b1": 60.0, "b2": 80.0, "c1": 45.0}
    stacks = {}
    for name, t in angles.items():
        S = np.empty((L, d))
        for layer in range(L):
            b = B[layer] / np.linalg.norm(B[layer])
            e = rng.standard_normal(d)
            e -= (e @ b) * b
            e /= np.linalg.norm(e)
            tt = np.radians(t + 5 * layer)  # the trace falls with depth, by construction
            S[layer] = 3.0 * (np.cos(tt) * b + np.sin(tt) * e)
        stacks[name] = S
    return B, angles, stacks


def test_base_similarity_on_synthetic_groups(tmp_path):
    B, angles, stacks = synthetic_bases()
    layers = {"a1": 2, "a2": 2, "b1": 4, "b2": 0, "c1": 5}
    groups = {"labA": ["a1", "a2"], "labB": ["b1", "b2"]}
    vectors = {n: stacks[n][layers[n]] for n in stacks}
    res = base_similarity(vectors, {n: B for n in stacks}, layers, stacks, groups)
    want = {n: np.cos(np.radians(angles[n] + 5 * layers[n])) for n in stacks}
    for n in stacks:
        assert res["vectors"][n]["cosine"] == pytest.approx(want[n], abs=TOL)
        assert np.allclose(
            res["traces"][n]["cosine"], np.cos(np.radians(angles[n] + 5 * np.arange(6))), atol=TOL
        )
    assert res["groups"]["labA"]["mean"] == pytest.approx((want["a1"] + want["a2"]) / 2, abs=TOL)
    assert res["groups"]["labB"]["mean"] == pytest.approx((want["b1"] + want["b2"]) / 2, abs=TOL)
    assert res["vectors"]["c1"]["group"] == "ungrouped"
    # Through the suite: figures and JSON.
    out = run_suite(
        vectors,
        out_dir=tmp_path,
        n_null=0,
        workers=0,
        layers=layers,
        layer_stacks=stacks,
        base_vectors={n: B for n in stacks if n != "c1"},
        groups=groups,
    )
    assert set(out["base_similarity"]["groups"]) == {"labA", "labB"}
    assert any("c1: no base-model direction" in n for n in out["notes"])
    for key in ("base_similarity", "base_similarity_layers"):
        png = tmp_path / out["figures"][key]
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    saved = json.loads((tmp_path / "geometry.json").read_text())
    assert saved["base_similarity"]["vectors"]["a1"]["cosine"] == pytest.approx(want["a1"])
    with pytest.raises(ConfigError, match="only 6 layers"):
        base_similarity(vectors, {"a1": B}, {"a1": 9})


# ---------------------------------------------------------------- files


def test_per_vector_layers_tables_lists_and_groupings(tmp_path):
    from misdirection.directions import DirectionSet

    rng = np.random.default_rng(0)
    stacks = {n: rng.standard_normal((5, 8)) for n in ("a", "b", "c")}
    for n, S in stacks.items():
        DirectionSet(S, {"method": "mean-diff"}).save(tmp_path / f"{n}.safetensors")
    np.save(tmp_path / "one.npy", stacks["c"][1])  # a single vector: any layer
    (tmp_path / "sel").mkdir()
    (tmp_path / "sel" / "chosen.json").write_text(json.dumps({"layer": 3, "scale": 4.0}))
    (tmp_path / "layers.csv").write_text("name,layer,score\na,1,0.1\na,2,0.9\na,4,0.9\n")
    (tmp_path / "layers.yaml").write_text("b: sel/chosen.json\n")
    assert load_layer_table(tmp_path / "layers.csv") == {"a": 2}  # highest score, lower layer
    assert load_layer_table(tmp_path / "layers.yaml") == {"b": 3}
    assert parse_spec("x=p.npy@-1").layer == -1 and parse_spec("p.npy@best").name == "p"
    loaded = load_vectors(
        [
            f"{tmp_path / 'a.safetensors'}@best",
            f"bee={tmp_path / 'b.safetensors'}@4",
            f"{tmp_path / 'c.safetensors'}",
            f"{tmp_path / 'one.npy'}@7",
        ],
        layer=0,
        layer_table={"a": 2},
    )
    assert [v.layer for v in loaded.values()] == [2, 4, 0, 7]
    assert [v.layer_from for v in loaded.values()] == ["layer table", "spec", "--layer", "spec"]
    assert np.allclose(loaded["a"].vector, stacks["a"][2], atol=1e-6)
    assert loaded["a"].stack.shape == (5, 8) and loaded["a"].metadata["method"] == "mean-diff"
    with pytest.raises(ConfigError, match="no --layer-table"):
        load_vectors([f"{tmp_path / 'a.safetensors'}@best"])
    with pytest.raises(ConfigError, match="not given"):
        load_vectors([f"{tmp_path / 'c.safetensors'}@1"], layer_table={"zz": 1})
    (tmp_path / "v.yaml").write_text(
        "- {name: a, path: a.safetensors, layer: 3, base: b.safetensors}\n- {path: c.safetensors}\n"
    )
    specs = read_vectors_file(tmp_path / "v.yaml")
    assert specs[0].layer == 3 and specs[0].base == tmp_path / "b.safetensors"
    assert specs[1].name == "c" and specs[1].layer is None
    (tmp_path / "g.yaml").write_text(
        "clusters: {x: [a, b]}\ngroups: {lab1: [a], lab2: [b, c]}\ntriplets: [[a, b, c]]\n"
    )
    g = load_groupings(tmp_path / "g.yaml")
    assert g.clusters == {"x": ["a", "b"]} and g.groups["lab2"] == ["b", "c"]
    assert g.triplets == [["a", "b", "c"]]
    (tmp_path / "plain.yaml").write_text("groups: [a, b]\n")  # a cluster named "groups"
    assert load_groupings(tmp_path / "plain.yaml").clusters == {"groups": ["a", "b"]}


def test_cli_with_base_triplets_and_layers(tmp_path):
    from typer.testing import CliRunner

    from misdirection.cli import app
    from misdirection.directions import DirectionSet

    B, _, stacks = synthetic_bases(L=6, d=30)
    for n, S in stacks.items():
        DirectionSet(S, {"method": "mean-diff"}).save(tmp_path / f"{n}.safetensors")
    DirectionSet(B, {"method": "mean-diff"}).save(tmp_path / "base.safetensors")
    (tmp_path / "cl.yaml").write_text(
        "clusters: {A: [a1, a2], B: [b1, b2]}\ngroups: {labA: [a1, a2], labB: [b1, b2, c1]}\n"
        "triplets: [[a1, b1, c1]]\n"
    )
    args = ["geometry", *(f"{tmp_path / n}.safetensors@{k}" for k, n in enumerate(stacks))]
    args += ["--base", str(tmp_path / "base.safetensors"), "--clusters", str(tmp_path / "cl.yaml")]
    args += ["--n-null", "5", "--workers", "0", "--out", str(tmp_path / "out")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "triplet a1-b1-c1, own mean removed" in r.output
    data = json.loads((tmp_path / "out" / "geometry.json").read_text())
    assert data["settings"]["layers"] == {n: k for k, n in enumerate(stacks)}
    assert data["base_similarity"]["vectors"]["b1"]["layer"] == 2
    assert data["preprint"]["triplets"][0]["vectors"] == ["a1", "b1", "c1"]
    assert "base_similarity_layers" in data["figures"]


# ---------------------------------------------------------------- transfer


def _answers(cells: dict[tuple[str, str, float], tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for (s, t, sc), (k, n) in cells.items():
        rows += [(s, t, sc, 10.0, 90.0)] * k + [(s, t, sc, 90.0, 90.0)] * (n - k)
    return pd.DataFrame(rows, columns=["source", "target", "scale", "aligned", "coherent"])


def test_transfer_uses_the_one_em_rule():
    df = pd.DataFrame(
        [("A", "A", 1.0, 30.0, 80.0), ("A", "A", 1.0, 10.0, 80.0), ("A", "A", 1.0, 10.0, 40.0)],
        columns=["source", "target", "scale", "aligned", "coherent"],
    )
    assert em_rates(df)["k"].iloc[0] == 1  # aligned 30 is not EM by default (strict)
    assert em_rates(df, Thresholds(inclusive=True))["k"].iloc[0] == 2


def test_transfer_intervals_from_per_answer_tables():
    cells = {
        ("none", "A", 0.0): (5, 50),
        ("none", "B", 0.0): (5, 50),
        ("A", "A", 4.0): (30, 50),
        ("A", "B", 4.0): (20, 50),
        ("A", "A", 2.0): (15, 50),
        ("B", "B", 4.0): (7, 50),
        ("B", "A", 4.0): (6, 50),
    }
    res = transfer_analysis(_answers(cells), resamples=4000, seed=1)
    E, lo, hi = (
        np.array(res[k]) for k in ("effectiveness", "effectiveness_low", "effectiveness_high")
    )
    assert E[0, 1] == pytest.approx((0.4 - 0.1) / (0.6 - 0.1), abs=TOL)
    assert lo[0, 0] == hi[0, 0] == 1.0
    # An independent bootstrap that resamples the answers of each cell.
    rng = np.random.default_rng(7)

    def rate(k, n, size):
        return (rng.random((size, n)) < k / n).mean(1)

    own, bs, tgt, bt = (
        rate(*cells[c], 4000)
        for c in [("A", "A", 4.0), ("none", "A", 0.0), ("A", "B", 4.0), ("none", "B", 0.0)]
    )
    ref = np.quantile((tgt - bt) / (own - bs), [0.025, 0.975])
    assert lo[0, 1] == pytest.approx(ref[0], abs=0.04) and hi[0, 1] == pytest.approx(
        ref[1], abs=0.04
    )
    # B barely raises EM on its own domain (7/50 vs 5/50): the ratio's interval is not estimable.
    assert np.isnan(lo[1, 0]) and any("B->A: interval not estimable" in n for n in res["notes"])
    # Dose-response: the scale-0 point first; A->B lacks scale 2 (A was run at 2 and 4): noted.
    curve = res["dose_response"]["A->A"]
    assert curve["scale"] == [0.0, 2.0, 4.0] and curve["em_rate"] == pytest.approx([0.1, 0.3, 0.6])
    assert curve["ci_low"][0] == pytest.approx(0.0435, abs=1e-3)  # Wilson 5/50
    assert any("A->B: no rows at scale 2" in n for n in res["notes"])
    assert res["dose_response"]["A->B"]["missing_scales"] == [2.0]
