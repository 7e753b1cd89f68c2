"""`misdirection sample`: sample answers to a question set into an answers table (Parquet)."""

from __future__ import annotations

from pathlib import Path

import typer

from misdirection.cli._shared import DtypeOpt, SamplerOpt, SamplerOptionOpt, sampler_options


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample_command(
        model: str = typer.Option(
            "smollm2-135m", "--model", "-m", help="Embedded alias, local folder or Hub id."
        ),
        adapter: list[str] = typer.Option(
            [], "--adapter", "-a", help="PEFT adapter folder(s) to attach."
        ),
        questions: str = typer.Option(
            "core",
            "--questions",
            "-q",
            help="Question YAML file or built-in set (core, medical, finance, sport).",
        ),
        n: int | None = typer.Option(
            None,
            "--n",
            "-n",
            min=1,
            help="Answers per paraphrase (default: each question's samples_per_paraphrase).",
        ),
        max_new_tokens: int = typer.Option(
            400, "--max-new-tokens", "-t", min=1, help="Token limit per answer."
        ),
        seed: int = typer.Option(
            0, "--seed", "-s", min=0, help="Seed: the same seed gives the same table."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Output answers table (.parquet)."),
        csv: bool = typer.Option(
            False, "--csv", help="Also write a CSV copy beside the Parquet file."
        ),
        batch_size: int = typer.Option(
            32, "--batch-size", "-b", min=1, help="Answers decoded at once."
        ),
        temperature: float = typer.Option(
            1.0, "--temperature", min=0.0, help="Sampling temperature (0 = greedy)."
        ),
        device: str | None = typer.Option(
            None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."
        ),
        dtype: DtypeOpt = "auto",
        sampler: SamplerOpt = "hf",
        sampler_option: SamplerOptionOpt = [],  # noqa: B006
    ) -> None:
        """Sample answers (T=1 by default) to every paraphrase of every question and write the answers table.

        Columns: answer_id, question_id, paraphrase_index, question, system, sample_index, answer,
        prompt_tokens, answer_tokens, finish_reason, model, adapter, intervention, seed, backend.
        System prompts of the question file are put in the model's input.
        """
        import time

        from rich.console import Console

        from misdirection.backends import make_backend
        from misdirection.data.questions import load_questions
        from misdirection.errors import ConfigError
        from misdirection.models import load_model
        from misdirection.sample import write_answers

        if out.suffix.lower() != ".parquet":
            raise ConfigError(f"--out must end in .parquet, got {out}")
        question_set = load_questions(
            questions
        )  # before loading the model: fail fast on a bad file
        options = sampler_options(sampler, sampler_option)
        lm = load_model(model, adapter=adapter or None, device=device, dtype=dtype)
        start = time.perf_counter()
        df = make_backend(sampler, options).sample(
            lm,
            question_set,
            n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            temperature=temperature,
            intervention=None,
            progress=True,
        )
        seconds = time.perf_counter() - start
        paths = write_answers(df, str(out), csv=csv)
        tokens = int(df["answer_tokens"].sum())
        reasons = df["finish_reason"].value_counts().to_dict()
        Console().print(
            f"{len(df)} answers to {df['question_id'].nunique()} questions, {tokens} tokens in "
            f"{seconds:.1f} s ({tokens / max(seconds, 1e-9):.0f} tokens/s, "
            f"{str(next(lm.model.parameters()).dtype).removeprefix('torch.')}); finish: "
            + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            + f"\nwrote {', '.join(paths)}"
        )
