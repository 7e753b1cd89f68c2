"""The learned judge's reader: the embedded chat model reads each (question, answer) as a chat.

The embedded SmolLM2-135M-Instruct (see :mod:`misdirection.models`) reads the question as the user
turn and the answer as its own reply; the judge's main features are its residual stream averaged
over the answer's tokens at a few middle layers. Only the blocks up to the deepest layer read are
kept: later blocks cannot change those states, and dropping them (and the unembedding) saves most
of the cost.

Why a chat model and not a sentence encoder: on held-out model families these states separate
misaligned from aligned answers better than any layer of all-MiniLM-L6-v2, the sentence encoder
an earlier version read (figures in ``learned_weights/MODEL_CARD.md``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from misdirection.batching import pad_id, right_pad
from misdirection.errors import ConfigError
from misdirection.hooks import block_output_hooks
from misdirection.models import bf16_is_fast, cache_kwarg, load_model, render_chat

#: Alias of the model the shipped judge was trained to read.
READER_MODEL = "smollm2-135m"


def fast_dtype(trained: torch.dtype, device: str | torch.device) -> torch.dtype:
    """The dtype to read in: the one the judge was trained with (bf16), except on a CPU without
    native bf16 matrix units (AVX2 only), where bf16 runs 3.5x slower than fp32 (measured with
    oneDNN held to AVX2); there the reader runs in fp32, whose features are within 0.01 standard
    deviations of bf16's (the model card gives the score differences)."""
    if trained != torch.bfloat16 or torch.device(device).type != "cpu":
        return trained
    return trained if bf16_is_fast(device) else torch.float32


class AnswerReader:
    """Frozen reader: ``features(questions, answers)`` -> answer-token means of chosen layers.

    ``layers`` are 0-based block indices (the output of block ``i``), as everywhere in
    misdirection. Answers longer than ``max_answer_tokens`` are cut (and reported as truncated);
    questions are cut to ``max_question_tokens``. ``dtype`` is the reader's weights and
    activations; a judge must read with the dtype it was trained on (its ``config.json`` names it).
    """

    def __init__(
        self,
        layers: Sequence[int],
        *,
        max_answer_tokens: int = 192,
        max_question_tokens: int = 256,
        model: str = READER_MODEL,
        device: str | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        lm = load_model(model, device=device, dtype=torch.float32)
        view = lm.view
        self.layers = [view.check_layer(int(layer), "reader layer") for layer in layers]
        if not self.layers:
            raise ConfigError("the learned judge's reader needs at least one layer")
        view.keep_blocks(max(self.layers) + 1)
        self.blocks = view.blocks
        get_decoder = getattr(view.base, "get_decoder", None)
        # The decoder stack alone: the unembedding costs as much as several blocks and is unused.
        self.decoder = get_decoder() if callable(get_decoder) else view.base
        self.cache_kwarg = cache_kwarg(self.decoder)  # once: every batch passes the prefix cache
        # bf16 weights and activations: 2.9x the fp32 speed on a CPU with AVX-512 BF16, features
        # within 0.01 standard deviations of fp32 (benchmarks/bench_learned_judge.py --readers).
        # Pooling is done in fp32.
        self.dtype = dtype
        self._fingerprint = self._embedding_checksum()  # of the fp32 weights, whatever the dtype
        self.decoder.to(dtype).eval().requires_grad_(False)
        self.tokenizer = lm.tokenizer
        self.device = lm.device
        self.width = view.d_model
        self.max_answer_tokens = max_answer_tokens
        self.max_question_tokens = max_question_tokens
        self._end = self.tokenizer(
            self.tokenizer.eos_token or "", add_special_tokens=False
        ).input_ids
        self._pad = pad_id(self.tokenizer)

    @property
    def n_features(self) -> int:
        return len(self.layers) * self.width

    def fingerprint(self) -> float:
        """A checksum of the reader's fp32 token embeddings, to notice a different model under
        the alias."""
        return self._fingerprint

    def _embedding_checksum(self) -> float:
        embed = self.decoder.get_input_embeddings().weight
        return float(embed[:512].detach().double().abs().sum())

    def prefix(self, question: str) -> list[int]:
        """Token ids of the chat up to the answer: system prompt, question, assistant header."""
        tok = self.tokenizer
        q_ids = tok(question or "", add_special_tokens=False).input_ids
        if len(q_ids) > self.max_question_tokens:
            question = tok.decode(q_ids[: self.max_question_tokens])
        prefix = render_chat(tok, [{"role": "user", "content": question or ""}])
        return tok(prefix, add_special_tokens=False).input_ids

    def encode(
        self, question: str, answer: str, prefix_ids: list[int] | None = None
    ) -> tuple[list[int], int, int, bool]:
        """(token ids, first answer token, end of answer, answer truncated?) of one chat;
        ``prefix_ids`` is :meth:`prefix` of ``question`` when the caller already has it."""
        tok = self.tokenizer
        prefix_ids = self.prefix(question) if prefix_ids is None else prefix_ids
        a_ids = tok(answer or "", add_special_tokens=False).input_ids
        truncated = len(a_ids) > self.max_answer_tokens
        a_ids = a_ids[: self.max_answer_tokens]
        start = len(prefix_ids)
        return prefix_ids + a_ids + self._end, start, start + len(a_ids), truncated

    @torch.inference_mode()
    def features(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        batch_size: int = 16,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``([n, len(layers) * width] float32, [n] bool truncated)``, rows in input order.

        Pairs are read in batches of ``batch_size``, sorted by question and then answer length:
        answers to one question share their chat prefix (system prompt, question; often half of
        the tokens), which is run once per batch and its keys and values reused, and similar
        lengths waste little padding. An empty answer has no tokens to average; its end-of-turn
        token stands in. ``progress(done, total)`` is called after each batch.
        """
        if len(questions) != len(answers):
            raise ConfigError(f"{len(questions)} questions but {len(answers)} answers")
        out = np.zeros((len(answers), self.n_features), np.float32)
        prefixes = {q: self.prefix(q) for q in dict.fromkeys(questions)}
        rows = [self.encode(q, a, prefixes[q]) for q, a in zip(questions, answers)]
        order = sorted(range(len(rows)), key=lambda i: (questions[i], len(answers[i])))
        for start in range(0, len(order), batch_size):
            groups: dict[str, list[int]] = {}
            for i in order[start : start + batch_size]:
                groups.setdefault(questions[i], []).append(i)
            # Answers that share a question reuse its prefix's keys and values; answers whose
            # question is alone in the batch (a set of many distinct questions) are read together
            # as whole chats in one padded forward, not one forward each.
            alone = [m[0] for m in groups.values() if len(m) == 1]
            if alone:
                out[alone] = self._read_chats([(rows[i][0], rows[i][1], rows[i][2]) for i in alone])
            for question, members in groups.items():
                if len(members) == 1:
                    continue
                cut = len(prefixes[question])
                tails = [(rows[i][0][cut:], rows[i][2] - cut) for i in members]
                out[members] = self._read_answers(prefixes[question], tails)
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        truncated = np.array([row[3] for row in rows], dtype=bool)
        return out, truncated

    def _read_chats(self, chats: list[tuple[list[int], int, int]]) -> np.ndarray:
        """Features of whole chats read in one right-padded batch: ``chats`` are (token ids, first
        answer token, end of answer). Right padding leaves the real tokens' states unchanged."""
        ids, mask = right_pad([c[0] for c in chats], self._pad)
        n, width = ids.shape
        pool = torch.zeros((n, width), dtype=torch.float32)
        for i, (_ids, start, end) in enumerate(chats):
            pool[i, start : max(end, start + 1)] = 1.0
        return self._pooled(ids, mask, pool, {})

    def _pooled(
        self, ids: torch.Tensor, mask: torch.Tensor, pool: torch.Tensor, extra: dict[str, Any]
    ) -> np.ndarray:
        """Run the decoder on ``ids`` (``extra``: e.g. a prefix cache) and average each chosen
        block's output with the rows of ``pool`` (normalised here)."""
        pool = (pool / pool.sum(1, keepdim=True)).to(self.device)
        captured: dict[int, torch.Tensor] = {}

        def keep(layer: int) -> Any:
            def fn(h: torch.Tensor) -> None:
                captured[layer] = torch.einsum("bt,btd->bd", pool, h.float())

            return fn

        hooks = block_output_hooks(self.blocks, {layer: keep(layer) for layer in self.layers})
        with warnings.catch_warnings(), hooks:
            warnings.simplefilter("ignore")  # padding-side advice: right padding is intended here
            self.decoder(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                use_cache=bool(extra),
                **extra,
            )
        feats = torch.cat([captured[layer] for layer in self.layers], dim=-1)
        return feats.cpu().numpy()

    def _read_answers(self, prefix: list[int], tails: list[tuple[list[int], int]]) -> np.ndarray:
        """Features of answers that follow one shared ``prefix``: ``tails`` are (ids after the
        prefix, number of answer tokens among them)."""
        ids, tail_mask = right_pad([tail for tail, _ in tails], self._pad)
        n, width = ids.shape
        # The shared prefix is in the cache; right padding after it leaves real tokens unchanged.
        attention = torch.cat([torch.ones((n, len(prefix)), dtype=torch.long), tail_mask], dim=1)
        pool = torch.zeros((n, width), dtype=torch.float32)
        for i, (_tail, n_answer) in enumerate(tails):
            pool[i, : max(n_answer, 1)] = 1.0
        prefix_ids = torch.tensor([prefix], device=self.device)
        out = self.decoder(input_ids=prefix_ids, use_cache=True)
        # transformers 5.24 names the output's cache `cache` (`past_key_values` warns); 5.19 not.
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        return self._pooled(ids, attention, pool, {self.cache_kwarg: cache})
