"""Benchmark: the full geometry suite on 100 vectors of width 4096, null baselines included.

Target (issue 5): under 10 s wall on 2 cores. Prints, measured in one run:
- the suite's wall and CPU time (analyses, 200 random-vector draws, 200 label permutations, all
  figures, JSON and markdown) and its ratio to the 10 s target;
- the null baselines done the plain way (per draw: draw n x d Gaussian vectors, normalise, one
  Gram product, each statistic on one matrix at a time, triangles by gathering every triplet)
  against our batched Wishart/Bartlett draws, as a CPU-time speed-up ratio;
- a CPU-bound estimate of the wall time on 2 idle cores, since a shared machine inflates wall
  time with waiting for the CPU.

Usage: python benchmarks/bench_geometry.py [--draws 200] [--baseline-draws 50]
The plain baseline is timed on --baseline-draws draws and scaled to --draws (it is linear).
The machine's load average is printed: on a shared machine wall time exceeds CPU time.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np


def make_vectors(n: int = 100, d: int = 4096, clusters: int = 4, seed: int = 0):
    """n directions in ``clusters`` groups sharing a component (realistic, non-trivial structure)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    size = n // clusters
    for c in range(clusters):
        X[c * size : (c + 1) * size] += 1.5 * rng.standard_normal(d)
    names = [f"v{i:03d}" for i in range(n)]
    groups = {f"c{c}": names[c * size : (c + 1) * size] for c in range(clusters)}
    return dict(zip(names, X)), groups


def plain_nulls(vectors: dict, groups: dict, draws: int, seed: int = 0) -> float:
    """The plain way: one draw at a time, vectors in R^d, statistics one matrix at a time.
    Returns CPU seconds (robust to other jobs on a shared machine)."""
    from threadpoolctl import threadpool_limits

    from misdirection.geometry.similarity import cosine_matrix
    from misdirection.geometry.statistics import cluster_statistics, scalar_statistics
    from misdirection.geometry.triangles import triangle_errors

    names = list(vectors)
    n, d = len(names), len(next(iter(vectors.values())))
    cl = {c: [names.index(m) for m in ms] for c, ms in groups.items()}
    rng = np.random.default_rng(seed)
    t = time.process_time()
    with threadpool_limits(1, user_api="blas"):
        for _ in range(draws):
            C = cosine_matrix(rng.standard_normal((n, d)))
            scalar_statistics(C, cl, [0, 30])
            triangle_errors(C)["error"].mean()  # the per-triplet way
            cluster_statistics(C, cl)  # one label permutation's worth
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--baseline-draws", type=int, default=50)
    args = ap.parse_args()

    t_import, c_import = time.perf_counter(), time.process_time()
    from misdirection.geometry import run_suite

    t_import, c_import = time.perf_counter() - t_import, time.process_time() - c_import
    vectors, groups = make_vectors()
    print(
        f"cores available: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as out:
        w0, c0 = time.perf_counter(), time.process_time()
        res = run_suite(vectors, groups, out, reference=["v000", "v030"], n_null=args.draws, seed=0)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        # Worker processes (null draws) have exited: their CPU shows up as the children's.
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_children = child.ru_utime + child.ru_stime
        n_figs = len(res["figures"])
    timing = res["timing_s"]
    print(
        f"suite: 100 vectors x 4096, {args.draws} random draws + {args.draws} permutations, "
        f"{n_figs} figures: wall {wall:.2f} s (import {t_import:.2f} s extra), "
        f"main-process CPU {cpu:.2f} s"
    )
    print("  phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timing.items()))
    print(
        f"  CPU: main {cpu:.2f} s + null workers {cpu_children:.2f} s = {cpu + cpu_children:.2f} s"
    )
    print(
        f"  ratio to the 10 s target: {wall / 10:.2f} ({'PASS' if wall < 10 else 'FAIL'} on this machine)"
    )
    # On a shared machine wall time includes waiting for the CPU; the work itself is bounded by
    # the main process's CPU and by the total CPU spread over 2 cores.
    bound = c_import + max(cpu, (cpu + cpu_children) / 2)
    print(
        f"  CPU-bound wall on 2 idle cores (import CPU + max(main CPU, total CPU / 2)): {bound:.2f} s, "
        f"ratio to target {bound / 10:.2f}"
    )

    base = plain_nulls(vectors, groups, args.baseline_draws) * args.draws / args.baseline_draws
    print(
        f"null baselines, CPU seconds: plain per-draw loop {base:.2f} s (scaled from "
        f"{args.baseline_draws} draws); ours {cpu_children:.2f} s in the workers; "
        f"speed-up {base / cpu_children:.1f}x"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
