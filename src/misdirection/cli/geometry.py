"""`misdirection geometry`: compare many directions, with null baselines."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = (
    "Compare many misalignment directions: cosine/angle matrices, SVD and rank-k reconstruction, "
    "triangle consistency, PCA, reference-pair projection, residual and cluster-independence "
    "tests, hierarchical clustering and MDS, each against random-vector and permuted-label null "
    "baselines; the six-vector pre-print's definitions beside ours (--definitions); each "
    "direction's similarity to the base model's (--base, groups in the clusters file). Writes "
    "geometry.json, summary.md and figures/ to --out."
)


def register(app: typer.Typer) -> None:
    @app.command(
        "geometry",
        help=HELP,
        short_help="Geometry of many directions against null baselines: JSON, summary, figures.",
    )
    def geometry(
        vectors: list[str] = typer.Argument(
            None,
            help="Vector files, as PATH, NAME=PATH, PATH@LAYER or NAME=PATH@LAYER (@best: the "
            "layer from --layer-table): direction files, .safetensors, .pt or .npy holding one "
            "tensor of shape (d) or (n_layers, d).",
            show_default=False,
        ),
        vectors_file: Path | None = typer.Option(
            None,
            "--vectors-file",
            help="YAML list of vectors: entries with name, path, layer (int or best) and "
            "optional base (the base model's direction file); paths relative to the list.",
        ),
        layer_table: Path | None = typer.Option(
            None,
            "--layer-table",
            help="Best layer per vector: CSV with name,layer[,score] (highest score wins) or "
            "YAML/JSON name -> layer or -> a select-layer chosen.json.",
        ),
        out: Path = typer.Option(..., "--out", help="Output folder (created if missing)."),
        layer: int | None = typer.Option(
            None,
            "--layer",
            min=0,
            help="Layer for (n_layers, d) files without their own @LAYER or table entry "
            "(layer i = output of block i).",
        ),
        clusters: Path | None = typer.Option(
            None,
            "--clusters",
            help="YAML/JSON: cluster name -> vector names, or a mapping with clusters, groups "
            "(lab or training procedure, for the base figure) and triplets (lists of 3 names).",
        ),
        triplet: list[str] = typer.Option(
            [],
            "--triplet",
            help="Three vector names A,B,C for the own-mean residual test. Repeatable.",
        ),
        base: list[str] = typer.Option(
            [],
            "--base",
            help="The base model's direction file (same extraction on the base model): FILE for "
            "every vector or NAME=FILE. Repeatable.",
        ),
        definitions: str = typer.Option(
            "both",
            "--definitions",
            help="Which definitions the summary shows: both, ours or preprint.",
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
        from misdirection.geometry.vectors import (
            Groupings,
            load_bases,
            load_groupings,
            load_layer_table,
            load_samples,
            load_vectors,
            read_vectors_file,
        )

        specs: list = list(vectors or [])
        listed = read_vectors_file(vectors_file) if vectors_file is not None else []
        specs += listed
        if not specs:
            raise ConfigError("give vector files (PATH or NAME=PATH[@LAYER]) or --vectors-file")
        table = load_layer_table(layer_table) if layer_table is not None else None
        loaded = load_vectors(specs, layer, table)
        bases = load_bases(
            base, list(loaded), {v.name: v.base for v in listed if v.base is not None}
        )
        ref = None
        if reference is not None:
            ref = [r.strip() for r in reference.split(",")]
            if len(ref) != 2:
                raise ConfigError(f"--reference must be two names A,B, got {reference!r}")
        grouping = load_groupings(clusters) if clusters is not None else Groupings()
        trips = grouping.triplets + [[x.strip() for x in t.split(",")] for t in triplet]
        # Samples are cut at the layer their vector was taken at.
        smp = dict(
            load_samples(s, getattr(loaded.get(s.partition("=")[0]), "layer", layer))
            for s in samples
        )
        res = run_suite(
            {n: v.vector for n, v in loaded.items()},
            grouping.clusters or None,
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
            layers={n: v.layer for n, v in loaded.items()},
            layer_stacks={n: v.stack for n, v in loaded.items() if v.stack is not None},
            base_vectors=bases or None,
            groups=grouping.groups or None,
            triplets=trips or None,
            definitions=definitions,
            sources={
                n: {
                    "path": v.path,
                    "layer": v.layer,
                    "layer_from": v.layer_from,
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
        for t in (res.get("preprint") or {}).get("triplets", []):
            typer.echo(
                f"triplet {'-'.join(t['vectors'])}, own mean removed: mean after-cosine "
                f"{t['mean_after']:.3f} (forced into [-1/2, -1/3)); reduction "
                f"{t['difference']:+.3f} (misdirection) / {t['relative_reduction_pct']:.1f}% "
                "(pre-print)"
            )
        for g, info in ((res.get("base_similarity") or {}).get("groups") or {}).items():
            typer.echo(
                f"cosine to the base model, group {g}: mean {info['mean']:.3f} (n={info['n']})"
            )
        for w in res.get("forced_by_construction", []):
            typer.echo(f"note: {w}")
        typer.echo(
            f"wrote {out / 'geometry.json'}, {out / 'summary.md'}"
            + (f" and {len(res['figures'])} figures in {out / 'figures'}" if res["figures"] else "")
        )
