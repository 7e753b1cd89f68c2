"""Sampling backends: what decodes a condition's answers for the engine.

* ``hf`` (:mod:`~misdirection.backends.hf`) — our own decoder over the Hugging Face model
  (:func:`misdirection.sample.sample_answers`), the reference path.
* ``vllm`` (:mod:`~misdirection.backends.vllm`) — vLLM, with our steering and ablation installed in
  its workers and adapters merged into its weights (needs the optional ``vllm`` extra).

Both return the same answers table (:func:`misdirection.sample.answers_table`) with the backend
recorded in its ``backend`` column, and both take the same intervention objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol, get_args

import pandas as pd

from misdirection.errors import ConfigError

BackendName = Literal["hf", "vllm"]
BACKENDS: tuple[str, ...] = get_args(BackendName)


class SamplingBackend(Protocol):
    """Decodes answers: the engine's only view of a backend."""

    name: str

    def identity(self) -> dict[str, Any]:
        """What, beyond the sampling settings, makes this backend's answers differ (cache identity)."""
        ...

    def sample(
        self,
        lm: Any,
        questions: Iterable[Any],
        n_per_paraphrase: int | None,
        *,
        max_new_tokens: int,
        seed: int,
        batch_size: int,
        temperature: float,
        intervention: Any,
        progress: bool,
    ) -> pd.DataFrame:
        """The answers table of ``lm`` (a LoadedModel, adapters attached) under ``intervention``."""
        ...


def make_backend(name: str, options: Mapping[str, Any] | None = None) -> SamplingBackend:
    """The backend called ``name`` built with ``options`` (those of its class)."""
    options = dict(options or {})
    if name == "hf":
        from misdirection.backends.hf import HFBackend

        if options:
            raise ConfigError(f"the hf backend takes no options; got {', '.join(sorted(options))}")
        return HFBackend()
    if name == "vllm":
        from misdirection.backends.vllm import VLLMBackend, vllm_available

        problem = vllm_available()  # before any model loads: a missing vllm fails at once
        if problem:
            raise ConfigError(f"sampling backend vllm: {problem}")
        try:
            return VLLMBackend(**options)
        except TypeError as exc:  # an option VLLMBackend does not take
            raise ConfigError(
                f"sampling backend vllm: {exc}; pass other vllm.LLM arguments as engine_options"
            ) from exc
    raise ConfigError(f"unknown sampling backend {name!r} (known: {', '.join(BACKENDS)})")
