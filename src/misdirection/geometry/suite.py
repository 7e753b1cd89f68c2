"""Run every geometry analysis on a set of named vectors: one JSON, a markdown summary, figures.

``geometry.json`` (format ``misdirection.geometry/1``; arrays as lists, NaN as null) holds:
``names``, ``norms``, ``settings``, ``sources``, ``clusters``; ``similarity`` (cosine and angle
matrices, summary, top pairs); ``subspace`` (singular values, energy shares, effective rank,
rank-k correlation and error, random-vector energy band); ``pca`` (explained variance, scores,
loadings); ``triangles`` (summary and triplets); ``reference_projection``; ``residual`` (per
group: before/after matrices and means); ``cohesion`` and ``independence`` (per cluster pair);
``clustering`` (linkage, merge heights, leaf order, cophenetic r, MDS coordinates and stress,
adjusted Rand index); ``statistics`` (every scalar: observed, random-vector and permuted-label
null summaries with percentiles); ``bootstrap``; ``transfer``; ``figures``; ``notes``;
``timing_s``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from misdirection.errors import ConfigError
from misdirection.geometry import forced, plots
from misdirection.geometry.base_similarity import base_similarity
from misdirection.geometry.clustering import agreement_with_clusters, classical_mds, hierarchical
from misdirection.geometry.independence import cluster_cohesion, independence
from misdirection.geometry.nulls import (
    DEFAULT_DRAWS,
    bootstrap,
    random_cosine_matrices,
    summarize,
)
from misdirection.geometry.preprint import preprint_analyses
from misdirection.geometry.report import markdown_summary, write_json
from misdirection.geometry.residual import residual_analysis
from misdirection.geometry.similarity import (
    angle_matrix,
    cosine_matrix,
    similarity_summary,
    top_pairs,
)
from misdirection.geometry.statistics import cluster_statistics, scalar_statistics
from misdirection.geometry.subspace import pca, reference_projection, spectrum
from misdirection.geometry.triangles import triangle_consistency
from misdirection.geometry.vectors import validate_vectors
from misdirection.io import to_jsonable
from misdirection.metrics import Thresholds

FORMAT = "misdirection.geometry/1"
DEFINITION_CHOICES = ("both", "ours", "preprint")
CHUNK = 25  # null draws evaluated together: bounds memory (~30 MB per array at n = 100)

# Statistics shown in the null-histogram figure when present (the rest are in the JSON).
HEADLINE = (
    "similarity.mean_cosine",
    "subspace.sv1_energy",
    "subspace.effective_rank",
    "pca.pc1_ratio",
    "triangles.mean_error_deg",
    "clustering.cophenetic_correlation",
    "clusters.gap",
    "clustering.adjusted_rand_index",
    "reference.mean_fraction_others",
)


def validate_clusters(
    clusters: Mapping[str, Sequence[str]] | None, names: Sequence[str]
) -> dict[str, list[int]]:
    """Cluster name -> member indices; ConfigError for unknown, repeated or shared members."""
    if not clusters:
        return {}
    index = {n: i for i, n in enumerate(names)}
    out: dict[str, list[int]] = {}
    owner: dict[str, str] = {}
    for cname, members in clusters.items():
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise ConfigError(f"cluster {cname!r} must list vector names, got {members!r}")
        if len(members) == 0:
            raise ConfigError(f"cluster {cname!r} is empty")
        idx = []
        for m in members:
            if m not in index:
                raise ConfigError(
                    f"cluster {cname!r} names unknown vector {m!r}; known vectors: {', '.join(names)}"
                )
            if m in owner:
                raise ConfigError(
                    f"vector {m!r} is in both cluster {owner[m]!r} and {cname!r}; clusters must be disjoint"
                )
            owner[m] = cname
            idx.append(index[m])
        out[str(cname)] = idx
    return out


def _reference_indices(reference: Sequence[str] | None, names: Sequence[str]) -> list[int] | None:
    if reference is None:
        return None
    ref = list(reference)
    unknown = [r for r in ref if r not in names]
    if unknown:
        raise ConfigError(
            f"reference names unknown vector(s) {unknown}; known vectors: {', '.join(names)}"
        )
    if len(ref) != 2 or ref[0] == ref[1]:
        raise ConfigError(f"reference must name two different vectors, got {ref}")
    return [names.index(r) for r in ref]


def _triplet_indices(
    triplets: Sequence[Sequence[str]] | None, names: Sequence[str]
) -> list[list[int]]:
    out = []
    for t in triplets or []:
        t = list(t)
        unknown = [x for x in t if x not in names]
        if unknown:
            raise ConfigError(
                f"triplet {t} names unknown vector(s) {unknown}; known vectors: {', '.join(names)}"
            )
        if len(t) != 3 or len(set(t)) != 3:
            raise ConfigError(f"a triplet must name three different vectors, got {t}")
        out.append([names.index(x) for x in t])
    return out


def _forced_warnings(
    names: Sequence[str], cl: Mapping[str, Sequence[int]], trip: Sequence[Sequence[int]]
) -> list[str]:
    """Warnings for the statistics whose value construction fixes (see :mod:`.forced`)."""
    out = [forced.own_mean_note(f"residual[all] ({len(names)} vectors)", len(names))]
    for c, m in cl.items():
        if len(m) == 2:
            out.append(forced.two_member_note(c))
        elif len(m) >= 3:
            out.append(forced.own_mean_note(f"residual[{c}]", len(m)))
    for t in trip:
        out.append(forced.own_mean_note("triplet " + "-".join(names[i] for i in t), 3))
    return out


def run_suite(
    vectors: Mapping[str, np.ndarray],
    clusters: Mapping[str, Sequence[str]] | None = None,
    out_dir: str | Path | None = None,
    *,
    reference: Sequence[str] | None = None,
    n_null: int = DEFAULT_DRAWS,
    n_perm: int | None = None,
    samples: Mapping | None = None,
    n_boot: int = DEFAULT_DRAWS,
    transfer=None,
    transfer_scale: float | None = None,
    seed: int = 0,
    figures: bool = True,
    workers: int | None = None,
    layer: int | None = None,
    sources: Mapping[str, Mapping] | None = None,
    max_triplets_listed: int = 1000,
    layers: Mapping[str, int | None] | None = None,
    layer_stacks: Mapping[str, np.ndarray] | None = None,
    base_vectors: Mapping[str, np.ndarray] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    triplets: Sequence[Sequence[str]] | None = None,
    definitions: str = "both",
    thresholds: Thresholds | None = None,
) -> dict:
    """Run the whole geometry suite and return its results as a JSON-ready dict.

    ``vectors``: name -> [d] array (any norm; analyses use directions). ``clusters``: optional
    name -> member names (disjoint). ``reference``: two vector names whose span every vector is
    projected on. ``n_null`` random-vector draws and ``n_perm`` label permutations (default
    ``n_null``; 0 disables). ``samples``: name -> per-answer activations [m, d] or a pair
    (misaligned, aligned) for bootstrap intervals. ``transfer``: a results table (DataFrame or
    CSV/Parquet path) for transfer effectiveness and dose-response curves. ``workers``: processes
    evaluating the null draws (default: 2 where 2 CPUs are available, 0 = in this process; the
    results are identical either way). With ``out_dir``,
    writes ``geometry.json``, ``summary.md`` and ``figures/*.png`` there.

    Per-vector settings: ``layers`` (name -> the layer each vector was taken at, recorded and used
    to pick the base row), ``layer_stacks`` (name -> every layer of its file, [n_layers, d], for
    layer-wise traces), ``base_vectors`` (name -> the base model's direction, [d] or
    [n_layers, d]) and ``groups`` (group -> names: lab or training procedure) give the
    base-similarity figure. ``triplets``: named sets of three for the own-mean residual test and
    per-triplet SVD. ``definitions``: ``"both"`` (default), ``"ours"`` or ``"preprint"``: which
    definitions the summary shows; the JSON holds ours always and the pre-print's unless
    ``"ours"``. ``thresholds``: the EM rule of the transfer table (default
    :class:`misdirection.metrics.Thresholds`).
    """
    if definitions not in DEFINITION_CHOICES:
        raise ConfigError(
            f"definitions must be one of {', '.join(DEFINITION_CHOICES)}, got {definitions!r}"
        )
    t0, c0 = time.perf_counter(), time.process_time()
    names, X = validate_vectors(vectors)
    n, d = X.shape
    if n < 2:
        raise ConfigError(f"the geometry suite needs at least 2 vectors, got {n}")
    cl = validate_clusters(clusters, names)
    ref = _reference_indices(reference, names)
    trip = _triplet_indices(triplets, names)
    n_perm = n_null if n_perm is None else n_perm
    notes: list[str] = []
    C = cosine_matrix(X)  # the one large product: all BLAS threads

    # Everything below works on n x n matrices, where BLAS threading only adds overhead (and
    # stalls badly on a busy machine), so it runs single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        res: dict = {
            "format": FORMAT,
            "names": names,
            "n_vectors": n,
            "width": d,
            "norms": dict(zip(names, np.linalg.norm(X, axis=1))),
            "settings": {
                "layer": layer,
                "n_null": n_null,
                "n_perm": n_perm if cl else 0,
                "n_boot": n_boot if samples else 0,
                "seed": seed,
                "reference": list(reference) if reference else None,
                "layers": {nm: (layers or {}).get(nm, layer) for nm in names},
                "definitions": definitions,
            },
            "sources": dict(sources or {}),
            "clusters": {c: [names[i] for i in m] for c, m in cl.items()},
            "groups": {g: list(m) for g, m in (groups or {}).items()},
            "triplets": [[names[i] for i in t] for t in trip],
        }
        warnings = _forced_warnings(names, cl, trip)
        res["similarity"] = {
            "cosine": C,
            "angle_deg": angle_matrix(C),
            "summary": similarity_summary(C),
            "top_pairs": top_pairs(C, names, 10),
        }
        spec = spectrum(C)
        res["subspace"] = spec
        p = pca(C)
        res["pca"] = {
            "explained_variance": p["explained_variance"],
            "explained_variance_ratio": p["explained_variance_ratio"],
            "scores": {nm: p["scores"][i, :10] for i, nm in enumerate(names)},
            "loadings": {nm: p["loadings"][i, :10] for i, nm in enumerate(names)},
            "note": "scores = coordinates of the centred unit vectors on the first 10 PCs; "
            "loadings = cosine between each unit vector and each PC axis",
        }
        if n >= 3:
            res["triangles"] = triangle_consistency(C, names, max_triplets_listed)
        else:
            res["triangles"] = None
            notes.append(f"triangle consistency is defined for 3 or more vectors; this set has {n}")
        if ref is not None:
            rp = reference_projection(C, ref, norms=np.linalg.norm(X, axis=1))
            res["reference_projection"] = {"reference": [names[i] for i in ref], **rp}
        else:
            res["reference_projection"] = None
        residual = {"all": residual_analysis(C, range(n))}
        for c, m in cl.items():
            if len(m) >= 2:
                residual[c] = residual_analysis(C, m)
        res["residual"] = {
            k: {**v, "targets": [names[i] for i in (range(n) if k == "all" else cl[k])]}
            for k, v in residual.items()
        }
        if cl:
            res["cohesion"] = cluster_cohesion(C, cl)
            res["independence"] = {
                f"{a}|{b}": independence(C, cl[a], cl[b])
                for x, a in enumerate(cl)
                for b in list(cl)[x + 1 :]
            }
        tree = hierarchical(C)
        mds = classical_mds(C)
        res["clustering"] = {
            "hierarchical": {**tree, "leaf_order": [names[i] for i in tree["leaf_order"]]},
            "mds": {
                "coords": dict(zip(names, mds["coords"])),
                "stress": mds["stress"],
                "positive_eigen_share": mds["positive_eigen_share"],
                "distance": "angle in degrees (classical MDS)",
            },
        }
        if len(cl) >= 2:
            res["clustering"]["adjusted_rand_index"] = agreement_with_clusters(
                tree["linkage"], cl, n
            )

        if definitions != "ours":
            res["preprint"] = preprint_analyses(C, names, cl, trip, d, n_null, seed)
        else:
            res["preprint"] = None
        if base_vectors:
            bs = base_similarity(
                dict(zip(names, X)),
                base_vectors,
                {nm: (layers or {}).get(nm, layer) for nm in names},
                layer_stacks,
                groups,
            )
            notes.extend(bs["notes"])
            res["base_similarity"] = bs
        else:
            res["base_similarity"] = None
            if groups:
                notes.append("groups given but no base-model directions: no base-similarity figure")

        # Null baselines, all computed by the same scalar_statistics as the observed values. The
        # draws are made here (so results do not depend on the number of workers) and evaluated
        # in worker processes while this process draws the figures that do not need them.
        t_null, c_null = time.perf_counter(), time.process_time()
        observed = {k: float(v[0]) for k, v in scalar_statistics(C, cl or None, ref).items()}
        rng = np.random.default_rng(seed)
        draws = random_cosine_matrices(n, d, n_null, rng) if n_null > 0 else None
        perms = _permutations(n, cl, n_perm, rng) if cl and n_perm > 0 else None
        nulls = _NullRunner(C, cl or None, ref, draws, perms, tree["linkage"], _n_workers(workers))
        fig_paths: dict[str, str] = {}
        out = Path(out_dir) if out_dir is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        if out is not None and figures:
            t_fig, c_fig = time.perf_counter(), time.process_time()
            try:
                fig_paths.update(_figures_plain(res, out, C, p, tree, mds))
            except Exception as exc:  # noqa: BLE001 - a figure must never cost the results
                notes.append(f"figures failed ({exc!r}); results are complete")
            fig_time, fig_cpu = time.perf_counter() - t_fig, time.process_time() - c_fig
        random_stats, perm_stats = nulls.result()
        band = None
        if draws is not None:
            lam = np.clip(np.linalg.eigvalsh(draws)[:, ::-1], 0, None)
            energy = lam / lam.sum(1, keepdims=True)
            band = (np.percentile(energy, 2.5, axis=0), np.percentile(energy, 97.5, axis=0))
            res["subspace"]["null_energy_band"] = {"p2_5": band[0], "p97_5": band[1]}
        res["statistics"] = {
            k: {
                "observed": v,
                "random": summarize(v, random_stats[k]) if k in random_stats else None,
                "permuted": summarize(v, perm_stats[k]) if k in perm_stats else None,
            }
            for k, v in observed.items()
        }
        res["timing_s"] = {
            "analyses": t_null - t0,
            "nulls": time.perf_counter() - t_null,
            "analyses_cpu": c_null - c0,
            "nulls_cpu": time.process_time() - c_null,
        }
        if samples:
            boot = bootstrap(
                X, names, samples, lambda S: scalar_statistics(S, cl or None, ref), n_boot, seed
            )
            res["bootstrap"] = boot
            low = [nm for nm, c in boot["consistency"].items() if c < 0.99]
            if low:
                notes.append(
                    f"samples of {low} do not reproduce their vector (cosine < 0.99): "
                    "check layer and sign"
                )
        else:
            res["bootstrap"] = None
        if transfer is not None:
            from misdirection.geometry.transfer import transfer_analysis  # pandas/scipy.stats: lazy

            tr = transfer_analysis(
                transfer, scale=transfer_scale, thresholds=thresholds or Thresholds(), seed=seed
            )
            notes.extend(tr["notes"])
            res["transfer"] = tr
        else:
            res["transfer"] = None
        pc1 = res["statistics"].get("pca.pc1_ratio")
        if pc1 is not None:
            null_mean = (pc1.get("random") or {}).get("mean")
            warnings.append(forced.pc1_note(n, pc1["observed"], null_mean))
        res["forced_by_construction"] = warnings
        res["notes"] = notes
        if out is not None and figures:
            t_fig, c_fig = time.perf_counter(), time.process_time()
            try:
                fig_paths.update(
                    _figures_nulls(res, out, spec, band, random_stats, perm_stats, observed)
                )
            except Exception as exc:  # noqa: BLE001 - a figure must never cost the results
                notes.append(f"null figures failed ({exc!r}); results are complete")
            res["timing_s"]["figures"] = fig_time + time.perf_counter() - t_fig
            res["timing_s"]["figures_cpu"] = fig_cpu + time.process_time() - c_fig
        res["figures"] = fig_paths
        res["timing_s"]["total"] = time.perf_counter() - t0
        res["timing_s"]["total_cpu"] = time.process_time() - c0
        result = to_jsonable(res)
        if out_dir is not None:
            write_json(result, Path(out_dir) / "geometry.json")
            (Path(out_dir) / "summary.md").write_text(markdown_summary(result))
    return result


def _n_workers(workers: int | None) -> int:
    if workers is not None:
        return max(0, int(workers))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 0


def _permutations(
    n: int, cl: dict[str, list[int]], draws: int, rng: np.random.Generator
) -> np.ndarray:
    """[draws, n] index maps that shuffle the clustered vectors among themselves."""
    pool = np.array([i for m in cl.values() for i in m])
    perms = np.tile(np.arange(n), (draws, 1))
    for q in perms:
        q[pool] = rng.permutation(pool)
    return perms


def _random_task(draws: np.ndarray, cl, ref) -> dict[str, np.ndarray]:
    with threadpool_limits(limits=1, user_api="blas"):
        return scalar_statistics(draws, cl, ref)


def _perm_task(C: np.ndarray, cl, perms: np.ndarray, linkage: np.ndarray) -> dict[str, np.ndarray]:
    """Cluster statistics under shuffled labels. Shuffling labels among the clustered vectors is
    the same as permuting those rows/columns of C with the labels fixed, which lets a stack of
    permutations be evaluated in one batched call."""
    with threadpool_limits(limits=1, user_api="blas"):
        stats = cluster_statistics(C[perms[:, :, None], perms[:, None, :]], cl)
        if len(cl) >= 2:
            n = C.shape[0]
            stats["clustering.adjusted_rand_index"] = np.array(
                [
                    agreement_with_clusters(linkage, {c: q[m].tolist() for c, m in cl.items()}, n)
                    for q in perms
                ]
            )
        return stats


class _NullRunner:
    """Evaluates the null draws in chunks, in worker processes when ``workers`` > 0."""

    def __init__(
        self,
        C: np.ndarray,
        cl: dict[str, list[int]] | None,
        ref: list[int] | None,
        draws: np.ndarray | None,
        perms: np.ndarray | None,
        linkage: np.ndarray,
        workers: int,
    ) -> None:
        # (kind, task function, its arguments); kind is "random" or "permuted"
        self.tasks: list[tuple[str, Callable[..., dict[str, np.ndarray]], tuple[Any, ...]]] = []
        if draws is not None:
            self.tasks += [
                ("random", _random_task, (draws[b : b + CHUNK], cl, ref))
                for b in range(0, len(draws), CHUNK)
            ]
        if perms is not None:
            self.tasks += [
                ("permuted", _perm_task, (C, cl, perms[b : b + CHUNK], linkage))
                for b in range(0, len(perms), CHUNK)
            ]
        self.pool: ProcessPoolExecutor | None = None
        self.futures: list[Future[dict[str, np.ndarray]]] = []  # read only while pool is set
        if workers > 0 and len(self.tasks) > 1:
            try:
                ctx = multiprocessing.get_context("fork")
                self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
                self.futures = [self.pool.submit(fn, *args) for _, fn, args in self.tasks]
            except (ValueError, OSError):  # no fork on this platform: run in-process
                self.pool = None

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        outs = None
        if self.pool is not None:
            try:
                outs = [f.result() for f in self.futures]
            except BrokenProcessPool:  # a worker died (e.g. memory): redo in this process
                outs = None
            finally:
                self.pool.shutdown()
        if outs is None:
            outs = [fn(*args) for _, fn, args in self.tasks]
        merged: dict[str, dict[str, np.ndarray]] = {"random": {}, "permuted": {}}
        for kind in merged:
            parts = [o for (k, _, _), o in zip(self.tasks, outs) if k == kind]
            keys = list(dict.fromkeys(key for part in parts for key in part))
            merged[kind] = {key: np.concatenate([part[key] for part in parts]) for key in keys}
        return merged["random"], merged["permuted"]


def _figures_plain(res, out: Path, C, p, tree, mds) -> dict[str, str]:
    """Figures that do not need the null draws."""
    names = res["names"]
    clusters = res["clusters"] or None
    fig_dir = out / "figures"
    figs: dict[str, Path] = {}
    order = tree["leaf_order"]
    ordered = [names[i] for i in order]
    figs["cosine_heatmap"] = plots.heatmap(
        C[np.ix_(order, order)],
        ordered,
        ordered,
        fig_dir / "cosine_heatmap.png",
        title=f"Cosine similarity of {len(names)} directions (ordered by the dendrogram)",
        cbar_label="cosine similarity",
        vmin=-1,
        vmax=1,
    )
    ev = p["explained_variance_ratio"]
    pc2 = p["scores"][:, :2] if p["scores"].shape[1] >= 2 else p["scores"]
    figs["pca"] = plots.scatter2d(
        pc2,
        names,
        fig_dir / "pca.png",
        title="PCA of the unit directions",
        clusters=clusters,
        xlabel=f"PC1 ({100 * ev[0]:.1f}% of variance)",
        ylabel=f"PC2 ({100 * ev[1]:.1f}% of variance)" if len(ev) > 1 else "PC2 (none)",
    )
    figs["dendrogram"] = plots.dendrogram_plot(
        tree["linkage"],
        names,
        fig_dir / "dendrogram.png",
        clusters=clusters,
        title=f"Hierarchical clustering ({tree['method']} linkage on angles; cophenetic r = "
        f"{tree['cophenetic_correlation']:.2f})",
    )
    figs["mds"] = plots.scatter2d(
        mds["coords"],
        names,
        fig_dir / "mds.png",
        clusters=clusters,
        title=f"Classical MDS of angular distances (stress-1 = {float(mds['stress']):.3f})",
        xlabel="MDS axis 1 (degrees)",
        ylabel="MDS axis 2 (degrees)",
    )
    if res.get("reference_projection"):
        rp = res["reference_projection"]
        figs["reference_projection"] = plots.scatter2d(
            np.asarray(rp["coords"]),
            names,
            fig_dir / "reference_projection.png",
            clusters=clusters,
            unit_circle=True,
            title=f"Unit directions projected onto span({rp['reference'][0]}, "
            f"{rp['reference'][1]})",
            xlabel=f"along {rp['reference'][0]}",
            ylabel=f"along {rp['reference'][1]} (orthogonalised)",
        )
    bs = res.get("base_similarity")
    if bs and bs["vectors"]:
        figs["base_similarity"] = plots.base_similarity_plot(bs, fig_dir / "base_similarity.png")
        if bs["traces"]:
            figs["base_similarity_layers"] = plots.base_traces_plot(
                bs, fig_dir / "base_similarity_layers.png"
            )
    return {k: str(v.relative_to(out)) for k, v in figs.items()}


def _figures_nulls(
    res, out: Path, spec, band, random_stats, perm_stats, observed
) -> dict[str, str]:
    """Figures that show null distributions, and the transfer figures."""
    fig_dir = out / "figures"
    figs: dict[str, Path] = {}
    figs["spectrum"] = plots.spectrum_plot(
        spec["energy_fraction"], spec["rank_k_correlation"], fig_dir / "spectrum.png", band
    )
    entries = []
    for k in HEADLINE:
        if k in observed and (k in random_stats or k in perm_stats):
            s = res["statistics"][k]
            txt = []
            if s["random"]:
                r = s["random"]
                txt.append(
                    f"random pct {r['percentile']:.1f} (95%: {r['p2_5']:.3g} to {r['p97_5']:.3g})"
                )
            if s["permuted"]:
                txt.append(f"permuted pct {s['permuted']['percentile']:.1f}")
            entries.append(
                {
                    "name": k,
                    "observed": observed[k],
                    "random": random_stats.get(k),
                    "permuted": perm_stats.get(k),
                    "percentile_text": ", ".join(txt),
                }
            )
    if entries:
        figs["nulls"] = plots.null_histograms(entries, fig_dir / "nulls.png")
    tr = res.get("transfer")
    if tr:
        E = np.asarray(tr["effectiveness"], dtype=float)
        lo = np.asarray(tr["effectiveness_low"], dtype=float)
        hi = np.asarray(tr["effectiveness_high"], dtype=float)
        cell_text = [
            [
                "n/a"
                if not np.isfinite(E[y, x])
                else f"{E[y, x]:.2f}\n[{lo[y, x]:.2f}, {hi[y, x]:.2f}]"
                if np.isfinite(lo[y, x])
                else f"{E[y, x]:.2f}"
                for x in range(E.shape[1])
            ]
            for y in range(E.shape[0])
        ]
        finite = E[np.isfinite(E)]
        vmax = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        figs["transfer"] = plots.heatmap(
            E,
            tr["sources"],
            tr["targets"],
            fig_dir / "transfer.png",
            cmap="PuOr_r",
            title="Transfer effectiveness (target - baseline) / (source - baseline), "
            "95% intervals from resampled answers",
            labels=cell_text,
            cbar_label="effectiveness",
            vmin=-vmax,
            vmax=vmax,
            annotate=E.size <= 144,
            xlabel="target",
            ylabel="source direction",
        )
        if tr["dose_response"]:
            figs["dose_response"] = plots.dose_response_plot(
                tr["dose_response"], fig_dir / "dose_response.png"
            )
    return {k: str(v.relative_to(out)) for k, v in figs.items()}
