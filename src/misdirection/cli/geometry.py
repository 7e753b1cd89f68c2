"""`misdirection geometry`: compare many directions, with null baselines."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = (
    "Compare many misalignment directions: cosine/angle matrices, SVD and rank-k reconstruction, "
    "triangle consistency, PCA, reference-pair projection, residual and cluster-independence "
    "tests, hierarchical clustering and MDS, each against random-vector and permuted-label null "
    "baselines. Writes geometry.json, summary.md and figures/ to --out."
)


def register(app: typer.Typer) -> None:
    @app.command(
        "geometry",
        help=HELP,
        short_help="Geometry of many directions against null baselines: JSON, summary, figures.",
    )
    def geometry(
        vectors: list[str] = typer.Argument(
            ...,
            help="Vector files, as PATH or NAME=PATH: direction files, .safetensors, .pt or .npy "
            "holding one tensor of shape (d) or (n_layers, d).",
        ),
        out: Path = typer.Option(..., "--out", help="Output folder (created if missing)."),
        layer: int | None = typer.Option(
            None,
            "--layer",
            help="Layer to take from (n_layers, d) files (layer i = output of block i).",
        ),
        clusters: Path | None = typer.Option(
            None, "--clusters", help="YAML/JSON file mapping cluster name -> list of vector names."
        ),
        reference: str | None = typer.Option(
            None, "--reference", help="Two vector names A,B: project every vector onto their span."
        ),
        n_null: int = typer.Option(200, "--n-null", help="Random-vector null draws (0 = none)."),
        n_perm: int | None = typer.Option(
            None,
            "--n-perm",
            help="Label permutations for the cluster statistics (default: --n-null).",
        ),
        samples: list[str] = typer.Option(
            [],
            "--samples",
            help="NAME=FILE per-answer activations behind a vector, for bootstrap "
            "intervals (.npy of shape (m, d), or misaligned and aligned tensors). Repeatable.",
        ),
        n_boot: int = typer.Option(
            200, "--n-boot", help="Bootstrap draws when --samples is given."
        ),
        transfer: Path | None = typer.Option(
            None,
            "--transfer",
            help="Results table (.csv/.parquet; columns source, target, scale and "
            "em_rate or aligned+coherent) for transfer effectiveness.",
        ),
        transfer_scale: float | None = typer.Option(
            None,
            "--transfer-scale",
            help="Steering scale for the transfer matrix (default: largest).",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the null and bootstrap draws."),
        figures: bool = typer.Option(True, "--figures/--no-figures", help="Write PNG figures."),
        workers: int | None = typer.Option(
            None,
            "--workers",
            help="Processes for the null draws (default 2 when 2 CPUs; 0 = none).",
        ),
    ) -> None:
        from misdirection.errors import ConfigError
        from misdirection.geometry import run_suite
        from misdirection.geometry.vectors import load_clusters, load_samples, load_vectors

        loaded = load_vectors(vectors, layer)
        ref = None
        if reference is not None:
            ref = [r.strip() for r in reference.split(",")]
            if len(ref) != 2:
                raise ConfigError(f"--reference must be two names A,B, got {reference!r}")
        cl = load_clusters(clusters) if clusters is not None else None
        smp = dict(load_samples(s, layer) for s in samples)
        res = run_suite(
            {n: v.vector for n, v in loaded.items()},
            cl,
            out,
            reference=ref,
            n_null=n_null,
            n_perm=n_perm,
            samples=smp or None,
            n_boot=n_boot,
            transfer=transfer,
            transfer_scale=transfer_scale,
            seed=seed,
            figures=figures,
            workers=workers,
            layer=layer,
            sources={
                n: {
                    "path": v.path,
                    "layer": v.layer,
                    **{k: v.metadata[k] for k in ("method", "model", "adapter") if k in v.metadata},
                }
                for n, v in loaded.items()
            },
        )
        sim = res["similarity"]["summary"]
        typer.echo(
            f"{res['n_vectors']} vectors of width {res['width']}: mean cosine {sim['mean_cosine']:.3f} "
            f"(min {sim['min_cosine']:.3f}, max {sim['max_cosine']:.3f}); "
            f"effective rank {res['subspace']['effective_rank']:.2f}."
        )
        typer.echo(
            f"wrote {out / 'geometry.json'}, {out / 'summary.md'}"
            + (f" and {len(res['figures'])} figures in {out / 'figures'}" if res["figures"] else "")
        )
