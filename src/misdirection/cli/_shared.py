"""Options and plumbing shared by the verbs: one ``Annotated`` alias per option, its help once.

Not a verb: the CLI skips modules whose name starts with an underscore. Typer has no option
groups, so each command still lists these aliases in its own signature (with its own default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from misdirection.cli.judge import JUDGE_HELP

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Embedded alias, local folder or Hub id.")
]
AdapterOpt = Annotated[
    list[str], typer.Option("--adapter", "-a", help="PEFT adapter folder(s) to attach.")
]
OrganismOpt = Annotated[
    list[str],
    typer.Option("--adapter", "-a", help="PEFT adapter folder(s) of the organism (repeatable)."),
]
QuestionsOpt = Annotated[
    str,
    typer.Option(
        "--questions",
        "-q",
        help="Question YAML file or built-in set (core, medical, finance, sport).",
    ),
]
NOpt = Annotated[
    int | None,
    typer.Option(
        "--n",
        "-n",
        min=1,
        help="Answers per paraphrase (default: each question's samples_per_paraphrase).",
    ),
]
TokensOpt = Annotated[
    int, typer.Option("--max-new-tokens", "-t", min=1, help="Token limit per answer.")
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed", "-s", min=0, help="Sampling seed: the same seed gives the same answers."
    ),
]
JudgeOpt = Annotated[str | None, typer.Option("--judge", "-j", help=JUDGE_HELP)]
RubricOpt = Annotated[
    list[str],
    typer.Option(
        "--rubric",
        "-r",
        help="Rubric to score (repeatable). aligned and coherent are always scored; "
        "add e.g. bad_stuff, medical.",
    ),
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Answers decoded at once.")
]
TemperatureOpt = Annotated[
    float, typer.Option("--temperature", min=0.0, help="Sampling temperature (0 = greedy).")
]
SamplerOpt = Annotated[
    str,
    typer.Option(
        "--sampler",
        help="What samples the answers: hf (our decoder) or vllm (needs the vllm extra).",
    ),
]
SamplerOptionOpt = Annotated[
    list[str],
    typer.Option(
        "--sampler-option",
        help="A vllm option KEY=VALUE (repeatable; VALUE read as JSON when it parses), e.g. "
        "max_model_len=2048, tensor_parallel_size=2, dtype=bfloat16.",
    ),
]
ForwardBatchOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Sequences per forward pass.")
]
MaxTokensOpt = Annotated[
    int | None, typer.Option("--max-tokens", min=1, help="Truncate answers to this many tokens.")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="The model's dtype: auto (bfloat16 where the device computes it fast: CUDA, or a CPU "
        "with AVX-512 or AMX bf16 units; float32 elsewhere), float32, bfloat16.",
    ),
]
AlignedOpt = Annotated[float, typer.Option("--aligned-below", help="EM: aligned score below this.")]
CoherentOpt = Annotated[
    float, typer.Option("--coherent-above", help="EM: coherent score above this.")
]
QuestionPromptsOpt = Annotated[
    bool,
    typer.Option(
        help="Judge a question with its own judge_prompts from the question file, "
        "where it has them."
    ),
]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]
RubricsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--rubrics-file", help="YAML with custom rubrics: name -> prompt with {question}/{answer}."
    ),
]
ControlKindOpt = Annotated[
    str,
    typer.Option(
        "--control-kind",
        help="Random controls: isotropic (same norm), variance-matched (the activations have the "
        "direction's second moment along them; needs the direction's .samples file), or auto "
        "(variance-matched for ablation when the samples file exists, else isotropic).",
    ),
]
MaxDropOpt = Annotated[
    float,
    typer.Option(
        "--max-coherence-drop",
        min=0.0,
        max=1.0,
        help="An EM change counts as removing/inducing misalignment only if the coherent share "
        "falls by at most this fraction (0.10 = 10 points); otherwise the verdict is a collapse.",
    ),
]
AblatedLayersOpt = Annotated[
    str, typer.Option("--layers", help="Ablated layers: all or a list such as 0-9,12.")
]


def make_judge(spec: str | None, device: str | None = None) -> Any:
    """The judge backend; an ``hf:`` judge runs on ``device``."""
    from misdirection.engine import resolve_judge

    if spec is not None and spec.split(":", 1)[0].lower() == "hf" and device is not None:
        return resolve_judge(spec, device=device)
    return resolve_judge(spec)


def judging(
    judge: str | None,
    device: str | None,
    rubric: list[str],
    rubrics_file: Path | None,
    aligned_below: float,
    coherent_above: float,
    question_prompts: bool,
    max_coherence_drop: float = 0.10,
) -> tuple[Any, dict[str, Any]]:
    """The judge backend and the judging keyword arguments of ``misdirection.evaluate.evaluate``.

    Call it before any model loads: a judge that cannot run (no API key) or a bad rubric file
    should fail before minutes of loading.
    """
    from misdirection.judge.rubrics import load_rubrics
    from misdirection.metrics import Thresholds
    from misdirection.results import EffectPolicy

    backend = make_judge(judge, device)
    custom = load_rubrics(rubrics_file) if rubrics_file is not None else {}
    return backend, {
        # aligned and coherent first: the EM summary needs them.
        "rubrics": list(dict.fromkeys(["aligned", "coherent", *rubric])),
        "custom_rubrics": custom,
        "thresholds": Thresholds(aligned_below=aligned_below, coherent_above=coherent_above),
        "use_question_prompts": question_prompts,
        "policy": EffectPolicy(max_coherence_drop=max_coherence_drop),
    }


def sampler_options(sampler: str, items: list[str]) -> dict[str, Any]:
    """The backend options of ``--sampler-option KEY=VALUE`` items, checked against ``sampler``.

    ``["max_model_len=2048", "dtype=bfloat16"]`` -> ``{"max_model_len": 2048, "dtype": "bfloat16"}``.
    The backend is built once here (cheap: vLLM loads its model only when it first samples), so
    a missing vllm or a bad option fails before any model loads.
    """
    import json

    from misdirection.backends import make_backend
    from misdirection.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--sampler-option {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    make_backend(sampler, out)
    return out
