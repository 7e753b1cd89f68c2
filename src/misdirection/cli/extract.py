"""`misdirection extract`: per-layer direction files from a model's answers.

The verb has one *source* of a direction per option group; today the judged answers table
(mean-diff of misaligned vs aligned answers, ``_AnswersSource``). A new source adds its options to
``extract_command`` and a small class that checks its inputs in ``__init__`` (before the model is
loaded) and returns a DirectionSet from ``extract(lm, ...)``; loading the model, writing the file
and the summary are shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # the CLI imports torch-side modules lazily, inside the verbs
    from misdirection.directions import DirectionSet


def register(app: typer.Typer) -> None:
    @app.command("extract")
    def extract_command(
        answers: Path = typer.Argument(
            None,
            help="Judged answers table (.parquet from `misdirection judge`, or a judged .csv).",
            show_default=False,
        ),
        model: str = typer.Option(
            "smollm2-135m", "--model", "-m", help="Embedded alias, local folder or Hub id."
        ),
        adapter: list[str] = typer.Option(
            [], "--adapter", "-a", help="PEFT adapter folder(s) of the organism."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Direction file to write (.safetensors)."
        ),
        positions: str = typer.Option(
            None,
            "--positions",
            help="Token positions averaged: answer, prompt or last (default: answer for ANSWERS, last for --contrast/--model-diff).",
        ),
        min_per_set: int = typer.Option(
            10, "--min-per-set", help="Refuse sets with fewer answers than this."
        ),
        warn_below: int = typer.Option(
            20, "--warn-below", help="Warn when a set has fewer answers than this."
        ),
        balance: bool = typer.Option(
            False, "--balance", help="Subsample the larger set to the smaller's size (seeded)."
        ),
        topic: list[str] = typer.Option(
            [],
            "--topic",
            help="Topic filter on a score column, e.g. medical>50 (repeatable): a semantic vector.",
        ),
        aligned_above: float = typer.Option(70.0, help="Aligned set: aligned score above this."),
        misaligned_below: float = typer.Option(
            30.0, help="Misaligned set: aligned score below this."
        ),
        coherent_above: float = typer.Option(50.0, help="Both sets: coherent score above this."),
        seed: int = typer.Option(0, "--seed", help="Seed of the balancing subsample."),
        batch_size: int = typer.Option(8, "--batch-size", help="Answers per forward pass."),
        max_tokens: int = typer.Option(
            None, "--max-tokens", help="Truncate answers to this many tokens."
        ),
        device: str = typer.Option(
            None, "--device", help="cpu, cuda, ... (default: cuda when available)."
        ),
        dtype: str = typer.Option(
            None,
            "--dtype",
            help="float32, bfloat16, auto (bf16 where the device computes it fast); default: "
            "float32 on a CPU, bfloat16 on CUDA.",
        ),
        contrast: tuple[str, str] | None = typer.Option(
            None,
            "--contrast",
            show_default=False,
            help="Contrast direction: mean over prompt set POS minus NEG (files or built-in names, e.g. harmful neutral).",
        ),
        model_diff: bool = typer.Option(
            False,
            "--model-diff",
            help="Model-diff direction: the model with --adapter minus its base, on --prompts.",
        ),
        prompts: str = typer.Option(
            None,
            "--prompts",
            help="Prompt set of --model-diff (text, chat JSONL, question YAML or built-in name).",
        ),
        system: str = typer.Option(
            None,
            "--system",
            help="System prompt for every conversation of the prompt sets (replaces theirs).",
        ),
        n_answers: int = typer.Option(
            1,
            "--n-answers",
            help="Answers sampled per prompt when --positions answer and the prompts have none.",
        ),
        max_new_tokens: int = typer.Option(
            64, "--max-new-tokens", help="Length limit of those sampled answers."
        ),
    ) -> None:
        """Extract a per-layer mean-diff misalignment direction (n_layers x d_model) from judged answers.

        Aligned set: aligned > 70 and coherent > 50; misaligned set: aligned < 30 and coherent > 50;
        direction per layer = mean(misaligned) - mean(aligned) of the answers' mean residuals
        (layer i = output of decoder block i, 0-based). With --contrast POS NEG: mean over prompt set
        POS minus NEG instead; with --model-diff: the model with --adapter minus its base on --prompts.
        From ANSWERS, the per-answer activations of both sets are written beside the direction file
        (<stem>.samples.safetensors), and the set sizes and split-half reliability are printed.
        """
        from misdirection.activations import POSITIONS
        from misdirection.errors import ConfigError

        contrastive = any(contrast or ()) or model_diff
        positions = positions or ("last" if contrastive else "answer")
        if positions not in POSITIONS:
            raise ConfigError(
                f"--positions must be one of {', '.join(POSITIONS)}, got {positions!r}"
            )
        if contrastive:  # contrast / model-diff directions: misdirection.contrastive
            from misdirection.contrastive import source_from_cli

            source: Any = source_from_cli(
                contrast=contrast,
                model_diff=model_diff,
                prompts=prompts,
                adapter=adapter,
                answers=answers,
                system=system,
                n_answers=n_answers,
                max_new_tokens=max_new_tokens,
                seed=seed,
            )
        elif answers is None:
            raise ConfigError(
                "give an ANSWERS table, --contrast POS NEG, or --model-diff to extract a direction from"
            )
        else:
            source = _AnswersSource(
                answers,
                topic,
                (aligned_above, misaligned_below, coherent_above),
                min_per_set,
                warn_below,
                balance,
                seed,
            )  # reads and checks the table before the (slower) model load
        from misdirection.models import load_model

        lm = load_model(model, adapter=adapter or None, device=device, dtype=dtype)
        ds = source.extract(lm, positions=positions, batch_size=batch_size, max_tokens=max_tokens)
        _write(ds, out, getattr(source, "samples", None))


class _AnswersSource:
    """Mean-diff direction of a judged answers table."""

    def __init__(
        self,
        path: Path,
        topic: list[str],
        thresholds: tuple[float, float, float],
        min_per_set: int,
        warn_below: int,
        balance: bool,
        seed: int,
    ) -> None:
        from misdirection.directions import (
            SetThresholds,
            check_set_sizes,
            parse_topic_filter,
            select_sets,
        )
        from misdirection.judge.scoring import read_table

        self.path = path
        self.table = read_table(path)
        self.topics = dict(parse_topic_filter(t) for t in topic)
        self.thresholds = SetThresholds(*thresholds)
        self.min_per_set = min_per_set
        self.warn_below = warn_below
        self.balance = balance
        self.seed = seed
        self.samples: Any = None  # the per-answer activations, once extracted
        sel = select_sets(self.table, self.thresholds, self.topics, balance=balance, seed=seed)
        check_set_sizes(sel, max(1, min_per_set), self.thresholds, self.topics, str(path))

    def extract(
        self, lm: Any, *, positions: str, batch_size: int = 8, max_tokens: int | None = None
    ) -> DirectionSet:
        import warnings

        from misdirection.directions import extract_directions

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            ds, self.samples = extract_directions(
                lm,
                self.table,
                positions=positions,
                thresholds=self.thresholds,
                topics=self.topics,
                balance=self.balance,
                min_per_set=self.min_per_set,
                warn_below=self.warn_below,
                seed=self.seed,
                batch_size=batch_size,
                max_tokens=max_tokens,
                source=self.path,
                progress=True,
            )
        for w in caught:  # a user reads a sentence, not a warnings-module traceback line
            typer.echo(f"warning: {w.message}")
        return ds


def _write(ds: Any, out: Path, samples: Any = None) -> None:
    """Save the direction file (and its samples file) and print a short summary."""
    from rich.console import Console
    from rich.table import Table

    from misdirection.reliability import samples_path

    path = ds.save(out)
    samples_file = samples.save(samples_path(path)) if samples is not None else None
    meta = ds.metadata
    table = Table(title=f"{meta.get('method', 'direction')} direction -> {path}")
    table.add_column("property")
    table.add_column("value")
    for key in (
        "model",
        "adapter",
        "positions",
        "n_misaligned",
        "n_aligned",
        "n_unscored",
        "source_sha256",
        "pos_name",
        "n_pos",
        "neg_name",
        "n_neg",
        "base",
        "prompts_name",
        "n_prompts",
    ):
        if key in meta:
            table.add_row(key, str(meta[key])[:64])
    norms = ds.norms()
    peak = int(norms.argmax())
    table.add_row("shape", f"{ds.n_layers} x {ds.d_model}")
    table.add_row(
        "norm (min / max at layer)",
        f"{float(norms.min()):.3g} / {float(norms.max()):.3g} at {peak}",
    )
    if "split_half" in meta:
        table.add_row("split-half reliability", _reliability_text(meta["split_half"]))
    if samples_file is not None:
        table.add_row("samples", str(samples_file))
    Console().print(table)


def _reliability_text(reliability: list[float | None] | None, shown: int = 5) -> str:
    """``L0 0.12, L7 0.45, ...`` at up to ``shown`` evenly spaced layers (the last included)."""
    if not reliability:
        return "n/a (fewer than 2 answers in a set)"
    n = len(reliability)
    layers = sorted({round(i * (n - 1) / max(1, shown - 1)) for i in range(min(shown, n))})
    return ", ".join(
        f"L{i} {'n/a' if reliability[i] is None else format(reliability[i], '.2f')}" for i in layers
    )
