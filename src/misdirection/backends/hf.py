"""The reference backend: :func:`misdirection.sample.sample_answers` on the Hugging Face model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd


class HFBackend:
    """Our decoder; interventions are applied to the HF model as forward hooks / weight edits."""

    name = "hf"

    def identity(self) -> dict[str, Any]:
        # Nothing: caches written before backends existed are this backend's and stay valid.
        return {}

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
        from misdirection import sample  # looked up per call: tests count calls by patching it

        return sample.sample_answers(
            lm,
            questions,
            n_per_paraphrase,
            max_new_tokens,
            seed,
            batch_size=batch_size,
            temperature=temperature,
            intervention=intervention,
            progress=progress,
        )
