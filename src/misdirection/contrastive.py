"""Steering vectors from contrastive prompts and from model differences.

Two ways to get a per-layer direction besides the judged-answer mean-diff
(:func:`misdirection.directions.extract_directions`):

* :func:`contrast_directions` — mean activation over a *positive* prompt set minus the mean over a
  *negative* one (harmful vs neutral prompts, misaligned vs aligned persona system prompts, paired
  answers as in contrastive activation addition). ``method = "contrast"``.
* :func:`model_diff_directions` — mean activation of a fine-tuned model minus its base on the same
  inputs. ``method = "model-diff"``. With ``base_lm=None`` the base is the tuned PEFT model with its
  adapters disabled, so one copy of the weights serves both.

Both write the project's direction file format (:class:`misdirection.directions.DirectionSet`), so
their files work unchanged with steering, ablation, transfer, cosine and geometry.

Token positions (as in :mod:`misdirection.activations`): ``last`` = final token of the prompt (of
the given answer when a conversation ends with an assistant turn, the contrastive-activation-
addition convention), ``prompt`` = every prompt token (chat template included), ``answer`` = the
answer tokens — the given final assistant turns when every conversation has one, otherwise answers
sampled first with :func:`misdirection.sample.sample_answers`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from misdirection.data.contrast import PromptSet, load_prompt_set
from misdirection.direction_set import DIRECTIONS_FORMAT, DirectionSet, mean_diff
from misdirection.errors import ConfigError, DataError, ShapeError
from misdirection.intervention_registry import register_intervention
from misdirection.models import LAYER_CONVENTION

Positions = Literal["last", "prompt", "answer"]
POSITIONS: tuple[str, ...] = ("last", "prompt", "answer")

__all__ = [
    "AdapterOff",
    "ContrastSource",
    "ModelDiffSource",
    "contrast_directions",
    "model_diff_directions",
    "prompt_set_hash",
    "prompts_table",
    "source_from_cli",
]


# ----------------------------------------------------------------------------------------------
# Prompt sets as answers tables


def prompt_set_hash(prompts: PromptSet) -> str:
    """SHA-256 of the conversations themselves (covers system prompts added after loading)."""
    text = json.dumps(prompts.prompts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _as_prompt_set(obj: PromptSet | str | Path) -> PromptSet:
    return obj if isinstance(obj, PromptSet) else load_prompt_set(obj)


def prompts_table(prompts: PromptSet, id_prefix: str = "") -> pd.DataFrame:
    """One row per conversation: ``answer_id, question, system, answer`` (the capture's input).

    A conversation must be one user turn, optionally after a system turn and optionally followed by
    an assistant answer (kept in ``answer``; empty otherwise).
    """
    rows = []
    for i, conv in enumerate(prompts.prompts):
        msgs = list(conv)
        answer = msgs.pop()["content"] if msgs and msgs[-1].get("role") == "assistant" else ""
        system = msgs.pop(0)["content"] if msgs and msgs[0].get("role") == "system" else ""
        if len(msgs) != 1 or msgs[0].get("role") != "user":
            roles = "/".join(str(m.get("role")) for m in conv)
            raise DataError(
                f"prompt set {prompts.name!r}: conversation {i} has turns {roles}; contrastive "
                "extraction needs one user turn, with an optional system turn before it and an "
                "optional assistant answer after it"
            )
        rows.append(
            {
                "answer_id": f"{id_prefix}{i}",
                "question": msgs[0]["content"],
                "system": system,
                "answer": answer,
            }
        )
    if not rows:
        raise DataError(f"prompt set {prompts.name!r} is empty")
    return pd.DataFrame(rows, columns=["answer_id", "question", "system", "answer"])


def _has_answers(table: pd.DataFrame, name: str) -> bool:
    given = table["answer"].str.len() > 0
    if given.all():
        return True
    if given.any():
        raise DataError(
            f"prompt set {name!r}: {int(given.sum())} of {len(table)} conversations end with an "
            "assistant answer; give answers for all of them or for none (then they are sampled)"
        )
    return False


def _sample_for(
    lm: Any,
    table: pd.DataFrame,
    *,
    n_answers: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
    progress: bool,
) -> tuple[pd.DataFrame, int]:
    """Sample ``n_answers`` per row; drop empty answers (no answer tokens) and return their count."""
    from misdirection.sample import sample_answers

    questions = [
        {"id": aid, "paraphrases": [q], "system": s}
        for aid, q, s in table[["answer_id", "question", "system"]].itertuples(
            index=False, name=None
        )
    ]
    sampled = sample_answers(
        lm,
        questions,
        n_per_paraphrase=n_answers,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=max(batch_size, 1),
        temperature=temperature,
        progress=progress,
    )
    empty = sampled["answer"].str.len() == 0
    return sampled.loc[~empty].reset_index(drop=True), int(empty.sum())


def _capture_mean_rows(lm: Any, table: pd.DataFrame, positions: str, **kw: Any) -> torch.Tensor:
    from misdirection.activations import capture_activations

    return capture_activations(lm, table, positions, **kw).values


def _check_positions(positions: str) -> str:
    if positions not in POSITIONS:
        raise ConfigError(f"positions must be one of {', '.join(POSITIONS)}; got {positions!r}")
    return positions


def _model_meta(method: str, lm: Any, positions: str) -> dict[str, Any]:
    return {
        "format": DIRECTIONS_FORMAT,
        "method": method,
        "model": lm.spec,
        "adapter": lm.adapter_spec,
        "layer_convention": LAYER_CONVENTION,
        "positions": positions,
    }


def _answers_meta(
    positions: str,
    sampled: bool,
    n_answers: int,
    max_new_tokens: int,
    temperature: float,
    **extra: Any,
) -> dict[str, Any]:
    """How the answers were made; sampling settings (``extra`` too) are None unless sampled."""
    return {
        "answers": "sampled" if sampled else ("given" if positions == "answer" else "none"),
        **{k: v if sampled else None for k, v in extra.items()},
        "n_answers": n_answers if sampled else None,
        "max_new_tokens": max_new_tokens if sampled else None,
        "temperature": temperature if sampled else None,
    }


def _set_meta(prefix: str, ps: PromptSet, n: int) -> dict[str, Any]:
    return {
        f"{prefix}_name": ps.name,
        f"{prefix}_source": ps.source,
        f"{prefix}_sha256": ps.sha256,
        f"{prefix}_content_sha256": prompt_set_hash(ps),
        f"n_{prefix}": n,
    }


# ----------------------------------------------------------------------------------------------
# Contrast directions


def contrast_directions(
    lm: Any,
    pos: PromptSet | str | Path,
    neg: PromptSet | str | Path,
    positions: Positions = "last",
    *,
    n_answers: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    max_tokens: int | None = None,
    progress: bool = False,
) -> DirectionSet:
    """Per-layer mean activation over ``pos`` minus the mean over ``neg`` (``method="contrast"``).

    ``pos`` / ``neg``: PromptSets or anything :func:`misdirection.data.load_prompt_set` accepts.
    For ``positions="answer"`` without given answers, ``n_answers`` answers per prompt are sampled
    (``seed``, ``temperature``, ``max_new_tokens``); answers that come out empty are dropped and
    counted in the metadata (``n_empty_answers``). ``max_tokens`` truncates answers for capture.
    """
    positions = _check_positions(positions)  # type: ignore[assignment]
    pos_set, neg_set = _as_prompt_set(pos), _as_prompt_set(neg)
    tables = {"pos": prompts_table(pos_set, "pos/"), "neg": prompts_table(neg_set, "neg/")}
    n_empty = 0
    sampled = False
    if positions == "answer":
        given = [_has_answers(t, s.name) for t, s in zip(tables.values(), (pos_set, neg_set))]
        if not all(given):
            if any(given):
                raise DataError(
                    "one prompt set has answers and the other has none; give answers for both or neither"
                )
            sampled = True
            for side in ("pos", "neg"):
                tables[side], dropped = _sample_for(
                    lm,
                    tables[side],
                    n_answers=n_answers,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    seed=seed,
                    batch_size=batch_size,
                    progress=progress,
                )
                n_empty += dropped
                if tables[side].empty:
                    raise DataError(
                        f"every sampled answer of the {side} set is empty; raise max_new_tokens"
                    )
    n_pos = len(tables["pos"])
    # One capture over both sets: better batching, identical per-row results.
    both = pd.concat([tables["pos"], tables["neg"]], ignore_index=True)
    values = _capture_mean_rows(
        lm, both, positions, batch_size=batch_size, max_tokens=max_tokens, progress=progress
    )
    directions = mean_diff(values[:n_pos], values[n_pos:])
    meta: dict[str, Any] = {
        **_model_meta("contrast", lm, positions),
        **_set_meta("pos", pos_set, n_pos),
        **_set_meta("neg", neg_set, len(both) - n_pos),
        "n_pos_prompts": len(pos_set),
        "n_neg_prompts": len(neg_set),
        **_answers_meta(positions, sampled, n_answers, max_new_tokens, temperature),
        "n_empty_answers": n_empty,
        "seed": seed,
        "max_tokens": max_tokens,
    }
    return DirectionSet(directions, meta)


# ----------------------------------------------------------------------------------------------
# Model-diff directions


@register_intervention
class AdapterOff:
    """An intervention that disables a PEFT model's adapters (the base model on the same weights)."""

    kind = "adapter-off"
    condition_kind = "adapter-off"
    control_kind = None  # no direction to randomise

    def apply(self, model: Any) -> Any:
        from misdirection.models import LoadedModel

        inner = model.model if isinstance(model, LoadedModel) else model
        if not hasattr(inner, "disable_adapter"):
            raise ConfigError(
                "the model has no adapters to disable; pass the base model explicitly"
            )
        return inner.disable_adapter()

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> AdapterOff:
        return cls()


def model_diff_directions(
    base_lm: Any | None,
    tuned_lm: Any,
    prompts: PromptSet | str | Path,
    positions: Positions = "last",
    *,
    answers_from: Literal["tuned", "base"] = "tuned",
    n_answers: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    max_tokens: int | None = None,
    progress: bool = False,
) -> DirectionSet:
    """Per-layer mean activation of ``tuned_lm`` minus ``base_lm`` on the same inputs (``model-diff``).

    ``base_lm=None``: ``tuned_lm`` must be a PEFT model; the base is it with adapters disabled.
    For ``positions="answer"`` without given answers, answers are sampled from ``answers_from``
    and then run through both models unchanged.
    """
    positions = _check_positions(positions)  # type: ignore[assignment]
    if answers_from not in ("tuned", "base"):
        raise ConfigError(f"answers_from must be 'tuned' or 'base'; got {answers_from!r}")
    ps = _as_prompt_set(prompts)
    if base_lm is not None:
        vb, vt = base_lm.view, tuned_lm.view
        if (vb.n_layers, vb.d_model) != (vt.n_layers, vt.d_model):
            raise ShapeError(
                f"base model ({vb.n_layers} layers x {vb.d_model}) and tuned model "
                f"({vt.n_layers} layers x {vt.d_model}) differ in shape; a model diff needs the same architecture"
            )
    elif not hasattr(tuned_lm.model, "disable_adapter"):
        raise ConfigError(
            "model_diff_directions needs a base model, or a tuned model with PEFT adapters"
        )
    table = prompts_table(ps, "p/")
    n_empty = 0
    sampled = False
    if positions == "answer" and not _has_answers(table, ps.name):
        sampled = True
        if answers_from == "base" and base_lm is None:
            source, context = tuned_lm, AdapterOff().apply(tuned_lm)
        else:
            source = base_lm if answers_from == "base" else tuned_lm
            context = contextlib.nullcontext()
        with context:
            table, n_empty = _sample_for(
                source,
                table,
                n_answers=n_answers,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
            )
        if table.empty:
            raise DataError("every sampled answer is empty; raise max_new_tokens")
    kw = {"batch_size": batch_size, "max_tokens": max_tokens, "progress": progress}
    tuned = _capture_mean_rows(tuned_lm, table, positions, **kw)
    if base_lm is None:
        from misdirection.activations import capture_activations

        base = capture_activations(
            tuned_lm, table, positions, intervention=AdapterOff(), **kw
        ).values
    else:
        base = _capture_mean_rows(base_lm, table, positions, **kw)
    # Same inputs in both: the difference of means is the mean of the paired differences.
    directions = mean_diff(tuned, base)
    meta: dict[str, Any] = {
        **_model_meta("model-diff", tuned_lm, positions),
        "base_model": base_lm.spec if base_lm is not None else tuned_lm.spec,
        "base_adapter": (base_lm.adapter_spec if base_lm is not None else ""),
        "base": "separate model" if base_lm is not None else "tuned model with adapters disabled",
        **_set_meta("prompts", ps, len(table)),
        **_answers_meta(
            positions, sampled, n_answers, max_new_tokens, temperature, answers_from=answers_from
        ),
        "n_empty_answers": n_empty,
        "seed": seed,
        "max_tokens": max_tokens,
    }
    return DirectionSet(directions, meta)


# ----------------------------------------------------------------------------------------------
# Direction sources for `misdirection extract` (inputs checked before the model is loaded)


class ContrastSource:
    """``--contrast POS NEG``: loads and checks both prompt sets in ``__init__``."""

    def __init__(
        self,
        pos: str,
        neg: str,
        *,
        system: str | None = None,
        n_answers: int = 1,
        max_new_tokens: int = 64,
        seed: int = 0,
    ) -> None:
        self.pos = load_prompt_set(pos, system=system)
        self.neg = load_prompt_set(neg, system=system)
        prompts_table(self.pos), prompts_table(self.neg)  # refuse multi-turn sets now
        self.sampling: dict[str, Any] = dict(
            n_answers=n_answers, max_new_tokens=max_new_tokens, seed=seed
        )

    def extract(
        self, lm: Any, *, positions: str, batch_size: int = 8, max_tokens: int | None = None
    ) -> DirectionSet:
        return contrast_directions(
            lm,
            self.pos,
            self.neg,
            positions,  # type: ignore[arg-type]
            batch_size=batch_size,
            max_tokens=max_tokens,
            progress=True,
            **self.sampling,
        )


class ModelDiffSource:
    """``--model-diff --prompts P``: the loaded model with its adapters minus itself without them."""

    def __init__(
        self,
        prompts: str | None,
        adapter: list[str] | None,
        *,
        system: str | None = None,
        n_answers: int = 1,
        max_new_tokens: int = 64,
        seed: int = 0,
    ) -> None:
        if not adapter:
            raise ConfigError(
                "--model-diff needs --adapter (the fine-tuned organism to compare with its base)"
            )
        if not prompts:
            raise ConfigError(
                "--model-diff needs --prompts (a prompt file or a built-in prompt set name)"
            )
        self.prompts = load_prompt_set(prompts, system=system)
        prompts_table(self.prompts)
        self.sampling: dict[str, Any] = dict(
            n_answers=n_answers, max_new_tokens=max_new_tokens, seed=seed
        )

    def extract(
        self, lm: Any, *, positions: str, batch_size: int = 8, max_tokens: int | None = None
    ) -> DirectionSet:
        return model_diff_directions(
            None,
            lm,
            self.prompts,
            positions,  # type: ignore[arg-type]
            batch_size=batch_size,
            max_tokens=max_tokens,
            progress=True,
            **self.sampling,
        )


def source_from_cli(
    *,
    contrast: tuple[str | None, str | None] | None,
    model_diff: bool,
    prompts: str | None,
    adapter: list[str] | None,
    answers: Any = None,
    system: str | None = None,
    n_answers: int = 1,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> ContrastSource | ModelDiffSource:
    """The direction source named by ``--contrast`` / ``--model-diff`` (exactly one, no ANSWERS)."""
    has_contrast = bool(contrast) and any(contrast or ())
    if has_contrast == bool(model_diff):
        raise ConfigError("give exactly one of --contrast POS NEG and --model-diff")
    if answers is not None:
        raise ConfigError("an ANSWERS table cannot be combined with --contrast or --model-diff")
    kw = {"system": system, "n_answers": n_answers, "max_new_tokens": max_new_tokens, "seed": seed}
    if model_diff:
        return ModelDiffSource(prompts, adapter, **kw)  # type: ignore[arg-type]
    assert contrast is not None
    if not all(contrast):
        raise ConfigError("--contrast needs two prompt sets: POS NEG")
    if prompts:
        raise ConfigError(
            "--prompts belongs to --model-diff; --contrast takes its two prompt sets itself"
        )
    return ContrastSource(str(contrast[0]), str(contrast[1]), **kw)  # type: ignore[arg-type]
