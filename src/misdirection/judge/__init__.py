"""Judges: rubrics and the backends that score (question, answer) pairs 0-100.

Pick a backend with a spec string (:func:`get_judge`):

* ``openai:MODEL`` -- any OpenAI-compatible endpoint (see :mod:`misdirection.judge.openai`);
  plain ``openai`` means ``openai:gpt-4o-2024-08-06``.
* ``hf:MODEL_SPEC`` -- a local transformers model scored by teacher forcing (:mod:`.hf`);
  MODEL_SPEC is anything :func:`misdirection.models.load_model` accepts.
* ``learned`` or ``learned:PATH`` -- the offline learned judge (:mod:`.learned`).

Backends are imported only when asked for, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
import sys

from misdirection.errors import JudgeError
from misdirection.judge.base import (
    MIN_NUMBER_MASS,
    JudgeItem,
    Rubric,
    Score,
    score_from_probabilities,
    score_from_top_logprobs,
)
from misdirection.protocols import Judge

__all__ = [
    "MIN_NUMBER_MASS",
    "Judge",
    "JudgeItem",
    "Rubric",
    "Score",
    "default_judge",
    "get_judge",
    "score_from_probabilities",
    "score_from_top_logprobs",
]

_SPEC_HELP = "openai:MODEL, hf:MODEL_SPEC or learned[:PATH]"


def get_judge(spec: str, **options: object) -> Judge:
    """Build the judge named by ``spec``; ``options`` go to the backend's constructor.

    Raises :class:`JudgeError` for an unknown spec or a backend that cannot run (e.g. no API key).
    """
    backend, _, arg = spec.strip().partition(":")
    backend = backend.lower()
    if backend == "openai":
        from misdirection.judge.openai import DEFAULT_MODEL, OpenAIJudge

        return OpenAIJudge(arg or DEFAULT_MODEL, **options)  # type: ignore[arg-type]
    if backend == "hf":
        if not arg:
            raise JudgeError(f"judge spec {spec!r} needs a model after 'hf:', e.g. hf:smollm2-135m")
        from misdirection.judge.hf import HFJudge

        return HFJudge(arg, **options)  # type: ignore[arg-type]
    if backend == "learned":
        return _learned_judge(arg or None, **options)
    raise JudgeError(f"unknown judge spec {spec!r}; use {_SPEC_HELP}")


def _learned_judge(path: str | None, **options: object) -> Judge:
    try:
        module = importlib.import_module("misdirection.judge.learned")
    except ModuleNotFoundError as exc:
        if exc.name != "misdirection.judge.learned":
            raise
        raise JudgeError(
            "the learned judge is not available in this installation; use openai:MODEL or hf:MODEL_SPEC"
        ) from None
    # The learned backend exposes either a factory or a class; accept both.
    factory = getattr(module, "load_learned_judge", None) or getattr(module, "LearnedJudge", None)
    if factory is None:
        raise JudgeError(
            "misdirection.judge.learned defines neither load_learned_judge nor LearnedJudge"
        )
    return factory(path, **options) if path else factory(**options)


def default_judge() -> Judge:
    """The openai judge if an API key is configured, else the offline learned judge (with a notice)."""
    from misdirection.judge.openai import api_key_from_env

    if api_key_from_env():
        return get_judge("openai")
    print(
        "notice: no OPENAI_API_KEY set; judging with the offline learned judge (pass --judge to choose)",
        file=sys.stderr,
    )
    return get_judge("learned")
