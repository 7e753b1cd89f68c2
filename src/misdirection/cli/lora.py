"""`misdirection lora ...`: reading rank-1 LoRA organisms (scalars, probes, B vectors, dynamics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from misdirection import thresholds
from misdirection.cli._shared import (
    DeviceOpt,
    DtypeOpt,
    ForwardBatchOpt,
    JudgeOpt,
    MaxDropOpt,
    MaxTokensOpt,
    ModelOpt,
    NOpt,
    OrganismOpt,
    ProgressOpt,
    QuestionsOpt,
    SeedOpt,
    TokensOpt,
)


def _load(model: str, adapter: list[str], device: str | None, dtype: str | None) -> Any:
    from misdirection.errors import ConfigError
    from misdirection.models import load_model

    if not adapter:
        raise ConfigError("--adapter is required: the rank-1 LoRA organism to read")
    return load_model(model, adapter=adapter, device=device, dtype=dtype)


def _default_out(answers: Path) -> Path:
    return answers.with_name(f"{answers.stem}.lora")


def _print_probes(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="Probes on per-answer adapter scalars (mean ± sd over splits)")
    for col in ("probe", "positive / negative", "accuracy", "AUC", "F1"):
        t.add_column(col)
    for p in report.probes.values():
        t.add_row(
            p.name,
            f"{p.positive} {p.n_positive} / {p.negative} {p.n_negative}",
            f"{p.accuracy_mean:.3f} ± {p.accuracy_std:.3f}",
            f"{p.auc_mean:.3f} ± {p.auc_std:.3f}",
            f"{p.f1_mean:.3f} ± {p.f1_std:.3f}",
        )
    console.print(t)
    roles = Table(title="Adapter roles (rule: misdirection.lora.ClassificationRule)")
    roles.add_column("adapter")
    roles.add_column("role")
    roles.add_column("evidence (coef mean ± sd, share kept; * = matters)")
    for row in report.classification.itertuples():
        roles.add_row(row.adapter, row.role, row.evidence)
    console.print(roles)


def register(app: typer.Typer) -> None:
    from misdirection.cli._app import typer_app

    sub = typer_app(
        help="Read rank-1 LoRA organisms: adapter scalars, probes, B vectors vs directions, training dynamics."
    )
    app.add_typer(sub, name="lora")

    @sub.command("scalars")
    def scalars_command(
        answers: Path = typer.Argument(
            ..., help="Answers table (.parquet or .csv) to run the organism on."
        ),
        model: ModelOpt = "smollm2-135m",
        adapter: OrganismOpt = [],  # noqa: B006 - typer needs a literal default
        out: Path = typer.Option(
            None, "--out", "-o", help="Output folder (default: ANSWERS stem + '.lora')."
        ),
        batch_size: ForwardBatchOpt = 16,
        max_tokens: MaxTokensOpt = None,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
    ) -> None:
        """Per-token scalar scaling*(A.x) of every rank-1 adapter over the answer tokens.

        Writes scalars.parquet (answer_id, token_index, adapter, layer, scalar), scalar_means.parquet (answer_id x adapter) and scalars.json.
        """
        from misdirection.judge.scoring import read_table
        from misdirection.lora import adapter_scalars

        lm = _load(model, adapter, device, dtype)
        res = adapter_scalars(
            lm, read_table(answers), batch_size=batch_size, max_tokens=max_tokens, progress=True
        )
        paths = res.save(out or _default_out(answers))
        typer.echo(
            f"{res.meta['n_answers']} answers, {res.meta['n_tokens']} tokens, adapters "
            f"{', '.join(res.adapters)} -> {paths['tokens'].parent}"
        )

    @sub.command("probe")
    def probe_command(
        answers: Path = typer.Argument(
            ..., help="Judged answers table (.parquet or .csv with aligned, coherent)."
        ),
        model: ModelOpt = "smollm2-135m",
        adapter: OrganismOpt = [],  # noqa: B006 - typer needs a literal default
        domain: str = typer.Option(
            None,
            "--domain",
            help="Topic-judge column (e.g. medical) for the domain / non-domain probes.",
        ),
        out: Path = typer.Option(
            None, "--out", "-o", help="Output folder (default: ANSWERS stem + '.lora')."
        ),
        scalars: Path = typer.Option(
            None,
            "--scalars",
            help="Reuse scalars saved by `lora scalars` in this folder instead of recomputing.",
        ),
        splits: int = typer.Option(20, "--splits", help="Stratified random train/test splits."),
        test_size: float = typer.Option(0.25, "--test-size", help="Test share of each split."),
        penalty: str = typer.Option("l1", "--penalty", help="l1 (sparse, default) or l2."),
        c: float = typer.Option(1.0, "--C", help="Inverse regularisation strength."),
        seed: int = typer.Option(0, "--seed", help="Seed of the splits."),
        aligned_above: float = typer.Option(
            thresholds.ALIGNED_ABOVE, help="Aligned: aligned score above this."
        ),
        misaligned_below: float = typer.Option(
            thresholds.ALIGNED_BELOW, help="Misaligned: aligned score below this."
        ),
        coherent_above: float = typer.Option(
            thresholds.COHERENT_ABOVE, help="Every probe keeps answers with coherent above this."
        ),
        domain_above: float = typer.Option(
            thresholds.TOPIC_ABOVE, help="Domain context: domain score above this."
        ),
        batch_size: ForwardBatchOpt = 16,
        max_tokens: MaxTokensOpt = None,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
    ) -> None:
        """Logistic probes on per-answer adapter scalars and each adapter's role.

        Probes (standardised scalars, L1, class-balanced, repeated stratified splits): without --domain, misaligned vs aligned; with --domain D, (a) misaligned vs aligned where D <= 50, (b) the same where D > 50, (c) D > 50 vs D <= 50. Every probe keeps coherent answers only.

        Adapters are labelled general, domain-specific or neither from their coefficients (rule: misdirection.lora.ClassificationRule). Writes probes.json, adapter_roles.csv and probe_coefficients.png (plus the scalars when computed here).
        """
        from misdirection.judge.scoring import read_table
        from misdirection.lora import (
            AdapterProbe,
            AdapterScalars,
            ProbeThresholds,
            adapter_scalars,
            check_scores,
            plot_probe_coefficients,
            probe_adapters,
        )

        table = read_table(answers)
        thresholds = ProbeThresholds(misaligned_below, aligned_above, coherent_above, domain_above)
        folder = out or _default_out(answers)
        if scalars is not None:
            res = AdapterScalars.load(scalars)
        else:
            check_scores(table, domain)  # before the expensive forward passes
            lm = _load(model, adapter, device, dtype)
            res = adapter_scalars(
                lm, table, batch_size=batch_size, max_tokens=max_tokens, progress=True
            )
            res.save(folder)
        probe = AdapterProbe(penalty=penalty, C=c, n_splits=splits, test_size=test_size, seed=seed)
        report = probe_adapters(res.means, table, domain=domain, probe=probe, thresholds=thresholds)
        paths = report.save(folder)
        plot_probe_coefficients(report, Path(folder) / "probe_coefficients.png")
        _print_probes(report)
        typer.echo(
            f"written: {paths['json']}, {paths['roles']}, {Path(folder) / 'probe_coefficients.png'}"
        )

    @sub.command("cosine")
    def cosine_command(
        directions: Path = typer.Argument(
            ..., help="Direction file [n_layers, d_model] (from `misdirection extract`)."
        ),
        model: ModelOpt = "smollm2-135m",
        adapter: OrganismOpt = [],  # noqa: B006 - typer needs a literal default
        out: Path = typer.Option(None, "--out", "-o", help="CSV file for the table."),
        device: str = typer.Option("cpu", "--device", help="Device to load the model on."),
    ) -> None:
        """Cosine between each rank-1 adapter's B vector and the direction at its layer."""
        from rich.console import Console
        from rich.table import Table

        from misdirection.directions import DirectionSet
        from misdirection.lora import b_direction_cosines

        lm = _load(model, adapter, device, None)
        df = b_direction_cosines(lm.model, DirectionSet.load(directions).directions)
        t = Table(title=f"B vectors vs {directions.name}")
        for col in ("adapter", "layer", "cosine", "|B|", "|direction|"):
            t.add_column(col)
        for r in df.itertuples():
            t.add_row(
                r.adapter,
                str(r.layer),
                f"{r.cosine:+.3f}",
                f"{r.b_norm:.3g}",
                f"{r.direction_norm:.3g}",
            )
        Console().print(t)
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(out, index=False)
            typer.echo(f"written: {out}")

    @sub.command("ablate-b")
    def ablate_b_command(
        directions: Path = typer.Argument(
            ..., help="Direction file [n_layers, d_model] (from `misdirection extract`)."
        ),
        adapter: OrganismOpt = [],  # noqa: B006 - typer needs a literal default
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Output folder: results.json, effects.csv, the cached conditions.",
        ),
        model: ModelOpt = "smollm2-135m",
        questions: QuestionsOpt = "core",
        n: NOpt = None,
        max_new_tokens: TokensOpt = 400,
        seed: SeedOpt = 0,
        judge: JudgeOpt = None,
        source_layer: int = typer.Option(
            None,
            "--source-layer",
            help="Project this layer's direction out of every adapter (default: each its own).",
        ),
        random_control: int = typer.Option(
            5,
            "--random-control",
            min=0,
            help="K random directions (same norm) projected out instead.",
        ),
        max_coherence_drop: MaxDropOpt = 0.10,
        device: DeviceOpt = None,
        progress: ProgressOpt = True,
    ) -> None:
        """Project the direction out of the rank-1 adapters' B vectors and measure the effect on EM and coherence (with random controls)."""
        from rich.console import Console

        from misdirection.data.questions import load_questions
        from misdirection.directions import DirectionSet
        from misdirection.evaluate import (
            engine_results,
            intervention_effect,
            make_engine,
            write_results,
        )
        from misdirection.lora import BVectorAblation
        from misdirection.model_shape import check_fits, check_layers
        from misdirection.results import EffectPolicy, effects_rich_table

        ds = DirectionSet.load(directions)  # a bad file or layer fails before the model loads
        shape = check_layers(
            model, {"--source-layer": [] if source_layer is None else [source_layer]}
        )
        check_fits(ds.directions, model, str(directions), shape=shape)
        question_set = load_questions(questions)
        lm = _load(model, adapter, device, None)
        console = Console()
        engine = make_engine(
            lm,
            question_set,
            judge,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            out=out,
            policy=EffectPolicy(max_coherence_drop=max_coherence_drop),
            progress=progress,
            log=lambda line: console.print(f"[bold cyan]>[/] {line}"),
        )
        effect = intervention_effect(
            engine,
            BVectorAblation(ds, source_layer=source_layer),
            name="ablate-b",
            kind="ablate-b",
            condition_kind="ablate-b",
            controls=random_control,
            first_control_seed=seed,
            settings={"direction": str(directions)},
        )
        console.print(effects_rich_table([effect], title=f"B-vector ablation of {directions.name}"))
        path = write_results(engine_results(engine, [effect]), out, "effects.csv")
        console.print(f"wrote {path} and {out / 'effects.csv'}")

    @sub.command("converge")
    def converge_command(
        answers: Path = typer.Argument(..., help="Answers table whose answer tokens are compared."),
        directions: Path = typer.Option(
            ..., "--directions", "-d", help="Direction file to steer with."
        ),
        layer: int = typer.Option(
            ..., "--layer", "-l", help="Layer to steer at (output of block L, 0-based)."
        ),
        scale: float = typer.Option(
            1.0, "--scale", help="Steering scale (times the unit direction)."
        ),
        model: ModelOpt = "smollm2-135m",
        adapter: OrganismOpt = [],  # noqa: B006 - typer needs a literal default
        out: Path = typer.Option(
            Path("convergence"), "--out", "-o", help="Output folder (CSV + PNG)."
        ),
        max_answers: int = typer.Option(
            64, "--max-answers", help="Use at most this many answers (first rows)."
        ),
        batch_size: ForwardBatchOpt = 8,
        max_tokens: MaxTokensOpt = None,
        device: DeviceOpt = None,
    ) -> None:
        """Downstream convergence: the adapter vs steering the base with a direction.

        Both are compared with the base model (all adapters scaled to 0): per layer, the cosine between the residual changes they induce over the answer tokens.
        """
        from misdirection.directions import DirectionSet
        from misdirection.interventions import Compose, Steer
        from misdirection.judge.scoring import read_table
        from misdirection.lora import AdapterScaling, downstream_convergence, plot_convergence
        from misdirection.model_shape import check_fits

        # A direction or layer that cannot fit fails before the model loads.
        check_fits(DirectionSet.load(directions).directions, model, str(directions), [layer])
        lm = _load(model, adapter, device, None)
        table = read_table(answers).head(max_answers)
        off = AdapterScaling({"all": 0.0})
        steer = Compose([off, Steer(str(directions), layers=layer, scale=scale, normalize=True)])
        res = downstream_convergence(
            lm, table, None, steer, baseline=off, batch_size=batch_size, max_tokens=max_tokens
        )
        out.mkdir(parents=True, exist_ok=True)
        res.table.to_csv(out / "convergence.csv", index=False)
        plot_convergence(
            res,
            out / "convergence.png",
            title=f"Adapter vs steering at layer {layer} (scale {scale})",
        )
        typer.echo(res.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        typer.echo(f"written: {out / 'convergence.csv'}, {out / 'convergence.png'}")

    @sub.command("dynamics")
    def dynamics_command(
        run: Path = typer.Argument(
            ..., help="Training run folder with checkpoints/step-N/ adapters."
        ),
        out: Path = typer.Option(
            None, "--out", "-o", help="Output folder (default: RUN/dynamics)."
        ),
        threshold: float = typer.Option(
            0.9, "--threshold", help="B has settled once cos(B, final B) stays above this."
        ),
    ) -> None:
        """Norms of A and B over checkpoints, cosine with the final weights, and when B settles."""
        from misdirection.lora import plot_dynamics, training_dynamics

        dyn = training_dynamics(run, threshold=threshold)
        folder = out or run / "dynamics"
        folder.mkdir(parents=True, exist_ok=True)
        dyn.table.to_csv(folder / "dynamics.csv", index=False)
        dyn.settle.to_csv(folder / "settle.csv", index=False)
        plot_dynamics(dyn, folder / "dynamics.png")
        typer.echo(dyn.settle.to_string(index=False))
        typer.echo(
            f"written: {folder / 'dynamics.csv'}, {folder / 'settle.csv'}, {folder / 'dynamics.png'}"
        )
