"""The core objects as the rest of the package uses them: a language model, an intervention, a judge.

Structural types (``typing.Protocol``): anything with these members fits, e.g. a
:class:`misdirection.models.LoadedModel`, a test double, or an intervention defined outside the
package. Signatures use them instead of ``Any`` so that a type checker sees what a function needs.
Two refinements of :class:`Intervention` name what random controls need: a
:class:`DirectionalIntervention` (its directions can be swapped) and a
:class:`ComposedIntervention` (it holds one such part, e.g. :class:`misdirection.interventions.Compose`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from misdirection.direction_set import DirectionSet
    from misdirection.hooks import Hookable
    from misdirection.judge.base import JudgeItem, Rubric, Score
    from misdirection.models import ModelView

__all__ = [
    "ComposedIntervention",
    "DirectionalIntervention",
    "Intervention",
    "Judge",
    "LanguageModel",
]


@runtime_checkable
class LanguageModel(Protocol):
    """A causal LM with its tokenizer and layer view (what :class:`~misdirection.models.LoadedModel`
    offers)."""

    @property
    def model(self) -> Any:
        """The transformers causal LM, peft-wrapped when adapters are attached."""
        ...

    @property
    def tokenizer(self) -> Any:
        """Its tokenizer (with a pad token, see :func:`~misdirection.models.prepare_tokenizer`)."""
        ...

    @property
    def view(self) -> ModelView:
        """Uniform access to its decoder blocks and their modules."""
        ...

    @property
    def spec(self) -> str:
        """The model spec it was loaded from (alias, folder or Hub id)."""
        ...

    @property
    def adapter_spec(self) -> str:
        """The adapter folder(s) attached, comma-separated; ``""`` for none."""
        ...

    @property
    def device(self) -> torch.device:
        """Where its parameters are."""
        ...

    def chat_prompt(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """``messages`` rendered with the model's chat template."""
        ...


@runtime_checkable
class Intervention(Protocol):
    """A change to a model while a context is active (steering, ablation, adapter scaling ...)."""

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description: the intervention's identity in caches and tables."""
        ...

    def apply(self, model: Hookable) -> AbstractContextManager[Any]:
        """A context manager that modifies ``model`` while active (e.g. adds forward hooks).

        ``model``: a LoadedModel, a ModelView or a transformers causal LM (peft-wrapped or not)."""
        ...


@runtime_checkable
class DirectionalIntervention(Intervention, Protocol):
    """An intervention built on a direction set, which random controls replace (Steer, Ablate ...)."""

    @property
    def directions(self) -> DirectionSet:
        """The directions it uses."""
        ...

    def with_directions(self, directions: DirectionSet) -> DirectionalIntervention:
        """The same intervention using ``directions`` instead (a random control's)."""
        ...


@runtime_checkable
class ComposedIntervention(Intervention, Protocol):
    """Several interventions as one, with one direction-based part that random controls replace."""

    def direction_part(self) -> DirectionalIntervention:
        """The one part whose directions random controls replace."""
        ...

    def with_directions(self, directions: DirectionSet) -> Intervention:
        """The composition with that part using ``directions`` instead."""
        ...


@runtime_checkable
class Judge(Protocol):
    """A scoring backend. ``name`` identifies backend and model, e.g. ``openai:gpt-4o-2024-08-06``."""

    name: str

    def score(self, rubric: Rubric, items: Sequence[JudgeItem]) -> list[Score]:
        """Score every item under ``rubric``; one Score per item, same order."""
        ...
