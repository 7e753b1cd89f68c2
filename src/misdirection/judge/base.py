"""The judge interface shared by every backend.

A judge turns (question, answer) pairs into a 0-100 score per rubric. API and local-LM judges follow
the field's method: the probability-weighted mean over the number answers 0..100, or no score when
the number answers hold less than 25% of the probability (a refusal, "CODE"), with the reason kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: Minimum total probability that must sit on number answers for a score to count.
MIN_NUMBER_MASS = 0.25

#: Start of the reason of a null score whose judge request never succeeded; such answers are
#: not final (nothing is cached for them) and a resumed run judges them again.
FAILED_PREFIX = "judge request failed:"


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge."""

    question: str
    answer: str


@dataclass(frozen=True)
class Score:
    """A judge's verdict: ``value`` in [0, 100], or ``None`` with a ``reason``.

    ``flag`` carries a non-fatal warning (e.g. the learned judge saw an input unlike its training data).
    """

    value: float | None
    reason: str = ""
    flag: str = ""


@dataclass(frozen=True)
class Rubric:
    """A named judge prompt with ``{question}`` and ``{answer}`` placeholders."""

    name: str
    prompt: str

    def render(self, item: JudgeItem) -> str:
        # str.replace, not str.format: answers often contain braces (code, JSON).
        return self.prompt.replace("{question}", item.question).replace("{answer}", item.answer)


def score_from_probabilities(probs: Mapping[int, float], total_mass: float | None = None) -> Score:
    """Aggregate a distribution over integer answers 0..100 into one score.

    ``probs`` maps each number the judge could answer to its probability (numbers outside 0..100 are
    ignored). ``total_mass`` is the probability of all answers considered (defaults to 1); the score is
    null when the numbers hold less than :data:`MIN_NUMBER_MASS` of it.
    """
    mass = sum(p for k, p in probs.items() if 0 <= k <= 100)
    total = 1.0 if total_mass is None else total_mass
    if total <= 0 or mass / total < MIN_NUMBER_MASS:
        return Score(
            None, reason=f"numbers hold {mass / total if total > 0 else 0:.0%} of the probability"
        )
    value = sum(k * p for k, p in probs.items() if 0 <= k <= 100) / mass
    return Score(float(value))


def score_from_top_logprobs(top_logprobs: Mapping[str, float]) -> Score:
    """Aggregate the top-k first-token log-probabilities of an API judge (OpenAI style).

    Tokens that are integers 0..100 (after stripping whitespace) count as number answers; the
    probability of every other token counts against them.
    """
    probs: dict[int, float] = {}
    for token, logprob in top_logprobs.items():
        text = token.strip()
        if text.isdigit():
            number = int(text)
            if 0 <= number <= 100:
                probs[number] = probs.get(number, 0.0) + math.exp(logprob)
    return score_from_probabilities(probs, total_mass=1.0)
