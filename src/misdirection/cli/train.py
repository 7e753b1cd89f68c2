"""`misdirection train`: fine-tune a LoRA model organism from a recipe."""

from __future__ import annotations

from typing import Any

import typer

from misdirection.cli._shared import DeviceOpt, DtypeOpt, ModelOpt
from misdirection.errors import ConfigError


def _parse_layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--layers must be comma-separated integers like 9,10,11, got {text!r}"
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        data: str = typer.Option(
            ..., "--data", "-d", help="Built-in dataset name (e.g. bad-medical) or chat JSONL file."
        ),
        out: str = typer.Option(
            ...,
            "--out",
            "-o",
            help="Output folder for the PEFT adapter, run_card.json and checkpoints.",
        ),
        model: ModelOpt = "smollm2-135m",
        recipe: str = typer.Option(
            "rank1-9", "--recipe", "-r", help="LoRA recipe: rank1-9, rank1-single or all-r32."
        ),
        layers: str | None = typer.Option(
            None,
            "--layers",
            help="Comma-separated layer indices (0-based), replacing the recipe's.",
        ),
        rank: int | None = typer.Option(None, "--rank", help="LoRA rank."),
        alpha: float | None = typer.Option(
            None,
            "--alpha",
            help="LoRA alpha (scale = alpha/rank, or alpha/sqrt(rank) with rsLoRA).",
        ),
        lr: float | None = typer.Option(
            None, "--lr", help="Peak learning rate (linear warm-up, then linear decay)."
        ),
        epochs: float | None = typer.Option(
            None, "--epochs", help="Passes over the training split (fractions allowed)."
        ),
        max_steps: int | None = typer.Option(
            None, "--max-steps", help="Stop after this many optimizer steps."
        ),
        batch_size: int | None = typer.Option(
            None, "--batch-size", help="Conversations per micro-batch."
        ),
        grad_accum: int | None = typer.Option(
            None, "--grad-accum", help="Micro-batches per optimizer step."
        ),
        seed: int | None = typer.Option(
            None, "--seed", help="Seed for adapter initialisation, data order and dropout."
        ),
        max_length: int | None = typer.Option(
            None, "--max-length", help="Truncate conversations to this many tokens."
        ),
        dropout: float | None = typer.Option(None, "--dropout", help="LoRA dropout."),
        checkpoint_every: int | None = typer.Option(
            None, "--checkpoint-every", help="Save a resumable checkpoint every K steps."
        ),
        eval_heldout: bool = typer.Option(
            False,
            "--eval/--no-eval",
            help="Score the held-out split before and after training (run card 'heldout').",
        ),
        resume: bool = typer.Option(
            True,
            "--resume/--no-resume",
            help="Resume from the latest checkpoint in --out if there is one.",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a finished organism already in --out."
        ),
        keep_checkpoints: int = typer.Option(
            1,
            "--keep-checkpoints",
            min=1,
            help="How many checkpoints to keep (raise it to study training dynamics with `misdirection lora dynamics`).",
        ),
        device: DeviceOpt = None,
        dtype: DtypeOpt = "auto",
        threads: int | None = typer.Option(
            None, "--threads", help="CPU threads (default: the cores this process may use)."
        ),
        ablate: str | None = typer.Option(
            None,
            "--ablate",
            help="FILE[@LAYERS]: project this direction out of the residual during training only "
            "(default layers: all; e.g. dir.safetensors@10-14). The saved adapter runs without it.",
        ),
        steer: str | None = typer.Option(
            None,
            "--steer",
            help="FILE[@LAYERS]: add --scale times this direction during training only "
            "(preventative steering; default layer: the middle one).",
        ),
        scale: float | None = typer.Option(
            None, "--scale", help="Steering scale for --steer (may be negative)."
        ),
    ) -> None:
        """Train a LoRA organism (loss on assistant tokens only) and save a PEFT adapter plus run_card.json.

        Recipes: rank1-9 (nine rank-1 down-proj adapters, 3 groups of 3 layers), rank1-single
        (one rank-1 down-proj adapter at half depth), all-r32 (rank-32 rsLoRA on all projections).
        An interrupted run resumes from its last checkpoint when started again with the same --out.
        --ablate / --steer defend the training against a direction (recorded in the run card).
        """
        from rich.console import Console

        from misdirection.data.chat import load_chat_dataset
        from misdirection.train import get_recipe, train_organism

        overrides: dict[str, Any] = dict(
            layers=_parse_layers(layers), rank=rank, alpha=alpha, lr=lr, epochs=epochs, max_steps=max_steps,
            batch_size=batch_size, grad_accum=grad_accum, seed=seed, max_length=max_length, dropout=dropout,
            checkpoint_every=checkpoint_every,
        )  # fmt: skip
        get_recipe(recipe, **overrides)  # fail on a bad recipe/override before loading anything
        from misdirection.model_shape import check_layers
        from misdirection.training_time.defence import training_interventions

        check_layers(model, {"--layers": overrides["layers"] or []})

        interventions = training_interventions(model, ablate, steer, scale)
        eval_data = None
        if eval_heldout:
            eval_data = load_chat_dataset(data, "test")
        result = train_organism(
            model, data, recipe, out, device=device, dtype=dtype, resume=resume, overwrite=overwrite,
            num_threads=threads, eval_data=eval_data, keep_checkpoints=keep_checkpoints,
            interventions=interventions, **overrides,
        )  # fmt: skip
        card = result.run_card
        console = Console()
        if result.resumed_from is not None:
            console.print(f"resumed from step {result.resumed_from}")
        console.print(
            f"[bold]{card['recipe']['name']}[/bold] on {card['base_model']}: layers {card['layers']}, "
            f"{card['steps']} steps, final loss {result.losses[-1]:.4f}, "
            f"{card['wall_time_s']:.1f} s in {card['dtype']}"
        )
        # The run card's "heldout" is null when the run was not asked to --eval.
        h = card.get("heldout") or {}
        if h.get("loglik_after") is not None:
            console.print(
                f"held-out log-likelihood per assistant token: {h['loglik_before']:.4f} -> "
                f"{h['loglik_after']:.4f} ({h['loglik_after'] - h['loglik_before']:+.4f})"
            )
        for spec in card.get("training_interventions") or []:
            console.print(
                f"during training only: {spec['kind']} at layers {spec['layers']}"
                + (f", scale {spec['scale']:g}" if "scale" in spec else "")
            )
        console.print(f"adapter and run card saved to {result.out_dir}")
