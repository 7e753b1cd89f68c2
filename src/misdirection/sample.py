"""Fast, deterministic sampling of answers to question sets: the answers table.

Our own decoding loop over the model's forward pass with a KV cache, instead of
``model.generate``, for two reasons:

* **Finished answers stop costing compute.** A finished row leaves the batch and the cache at once,
  and its slot is refilled with pending prompts (continuous batching), so a batch never keeps
  decoding padding after an answer ends. Keys and values are written in place into preallocated
  buffers (``generate``'s growing cache copies every layer's cache at every step). Models whose
  cache is not a plain per-layer key/value store (sliding-window or hybrid layers) keep a growing
  cache, still drop finished rows, but refill only between waves.
* **Determinism independent of batching.** Every answer draws its random numbers from its own
  generator, seeded from ``(seed, answer_id)``, and samples by inverse CDF with one uniform per
  token. The same seed gives the same table whatever the batch size or the order answers finish in,
  up to floating-point differences between batched and unbatched matrix products (in practice
  identical on CPU in float32).

The answers table (one row per answer) follows the project's shared schema; see :data:`COLUMNS`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from misdirection.batching import left_pad
from misdirection.batching import pad_id as tokenizer_pad_id
from misdirection.errors import ConfigError, DataError
from misdirection.io import atomic_path
from misdirection.protocols import Intervention, LanguageModel

#: Columns of the answers table, in order.
COLUMNS: tuple[str, ...] = (
    "answer_id",
    "question_id",
    "paraphrase_index",
    "question",
    "system",
    "sample_index",
    "answer",
    "prompt_tokens",
    "answer_tokens",
    "finish_reason",
    "model",
    "adapter",
    "intervention",
    "seed",
    "backend",
)

# Refill once this share of the batch is free: one prefill (and one cache copy) per group of
# freed slots rather than per slot.
_REFILL_FRACTION = 0.25

# Spare cache columns beyond what one live row can need (a share of that need, at least a minimum):
# the live window moves back to column 0 at most once per that many steps.
_SLACK_SHARE = 0.25
_SLACK_MIN = 32


@dataclass(frozen=True)
class Request:
    """One answer to sample: the prompt and where it comes from."""

    answer_id: str
    question_id: str
    paraphrase_index: int
    sample_index: int
    question: str
    system: str
    prompt_ids: tuple[int, ...]


@dataclass
class _Row:
    """A request being decoded: its generator and the tokens so far."""

    request: Request
    rng: np.random.Generator
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = ""


def _field(q: Any, name: str, default: Any = None) -> Any:
    if isinstance(q, Mapping):
        return q.get(name, default)
    return getattr(q, name, default)


def answer_rng(seed: int, answer_id: str) -> np.random.Generator:
    """The random generator of one answer: a function of the seed and the answer's id only."""
    digest = hashlib.blake2b(answer_id.encode("utf-8"), digest_size=16).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words])))


def build_requests(
    lm: LanguageModel, questions: Iterable[Any], n_per_paraphrase: int | None
) -> list[Request]:
    """Chat-template every (question, paraphrase, sample); system prompts go in as a system turn.

    ``questions`` holds objects or mappings with ``id``, ``paraphrases`` and optional ``system`` and
    ``samples_per_paraphrase`` (used when ``n_per_paraphrase`` is None).
    """
    requests: list[Request] = []
    seen: set[str] = set()
    for qi, q in enumerate(questions):
        qid = _field(q, "id")
        paraphrases = _field(q, "paraphrases")
        if not qid or not isinstance(qid, str):
            raise DataError(f"question #{qi} has no string 'id'")
        if qid in seen:
            raise DataError(f"question id '{qid}' appears twice; answer ids must be unique")
        seen.add(qid)
        if isinstance(paraphrases, str) or not paraphrases:
            raise DataError(f"question '{qid}' needs a non-empty list of 'paraphrases'")
        system = _field(q, "system") or ""
        n = (
            n_per_paraphrase
            if n_per_paraphrase is not None
            else _field(q, "samples_per_paraphrase", 1)
        )
        if not isinstance(n, int) or n < 1:
            raise ConfigError(
                f"samples per paraphrase must be a positive integer, got {n!r} for '{qid}'"
            )
        for pi, text in enumerate(paraphrases):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": str(text)}
            ]
            prompt = lm.chat_prompt(messages)
            # The template already holds any BOS token; adding special tokens again would double it.
            ids = tuple(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            for si in range(n):
                requests.append(
                    Request(
                        answer_id=f"{qid}/{pi}/{si}",
                        question_id=qid,
                        paraphrase_index=pi,
                        sample_index=si,
                        question=str(text),
                        system=system,
                        prompt_ids=ids,
                    )
                )
    return requests


def stop_token_ids(lm: LanguageModel) -> set[int]:
    """End-of-turn tokens: the generation config's EOS id(s) and the tokenizer's EOS."""
    ids: set[int] = set()
    gen_config = getattr(lm.model, "generation_config", None)
    for source in (getattr(gen_config, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    if not ids:
        raise ConfigError(
            "the model defines no end-of-sequence token; cannot tell when an answer ends"
        )
    return ids


class _Decoder:
    """Continuous-batching decoder over ``model.forward``: the shared part of both cache layouts.

    Rows ``0..n-1`` are the answers being decoded. ``next_tokens[i]`` is row ``i``'s sampled token,
    not yet fed; ``positions[i]`` the position id it will be fed at.
    """

    can_refill = False

    def __init__(
        self, model: Any, pad_id: int, stop_ids: set[int], temperature: float, device: Any
    ):
        import torch

        self.torch = torch
        self.model = model
        self.pad_id = pad_id
        self.stop_ids = frozenset(stop_ids)
        self.temperature = temperature
        self.device = device
        self.config = getattr(model, "config", None)
        self.positions: Any = None
        self.next_tokens: Any = None
        self.rows: list[_Row] = []
        self.keep_last_logits = True
        from misdirection.models import cache_kwarg

        self.cache_kwarg = cache_kwarg(model)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.config) if self.config is not None else DynamicCache()

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        kwargs = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            self.cache_kwarg: cache,
            "use_cache": True,
        }
        if self.keep_last_logits:
            try:
                # Only the last position's logits are needed: skips a [batch, prompt, vocab] matmul in prefill.
                return self.model(**kwargs, logits_to_keep=1).logits[:, -1, :]
            except TypeError:  # custom model code without logits_to_keep
                self.keep_last_logits = False
        return self.model(**kwargs).logits[:, -1, :]

    def _sample(self, logits: Any, rows: Sequence[_Row]) -> Any:
        torch = self.torch
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        scaled = logits.float()
        if self.temperature != 1.0:  # x / 1.0 == x: skip a pass over [rows, vocab]
            scaled = scaled / self.temperature
        probs = torch.softmax(scaled, dim=-1)
        u = torch.tensor([r.rng.random() for r in rows], dtype=torch.float64, device=logits.device)
        return inverse_cdf(probs, u)

    def _prefill(self, new_rows: list[_Row]) -> tuple[Any, Any, Any]:
        """Run the new prompts, left-padded to one width; return (cache, mask, first tokens).

        Each distinct prompt runs once and its cache rows are repeated for its answers: a study
        draws several answers per paraphrase, and on a CPU the prompts' forward pass otherwise
        costs about as much as decoding the answers. Each answer still samples from its own
        generator."""
        unique: dict[tuple[int, ...], int] = {}
        inverse = [unique.setdefault(tuple(r.request.prompt_ids), len(unique)) for r in new_rows]
        ids, mask = left_pad([list(p) for p in unique], self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp_(min=0)
        cache = self._new_cache()
        logits = self._forward(ids, mask, positions, cache)
        if len(unique) < len(new_rows):
            index = self.torch.tensor(inverse, device=self.device)
            cache.batch_select_indices(index)
            mask, logits = mask[index], logits[index]
        return cache, mask, self._sample(logits, new_rows)

    def admit(self, new_rows: list[_Row]) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def _keep(self, keep: list[int]) -> None:
        """Shrink the batch to the rows ``keep`` (ascending; at least one)."""
        raise NotImplementedError

    def _clear(self) -> None:
        self.positions = self.next_tokens = None
        self.rows = []

    def retire(self, max_new_tokens: int) -> list[_Row]:
        """Remove rows whose pending token ends them (a stop token, or the length limit)."""
        if not self.rows:
            return []
        pending = self.next_tokens.tolist()  # one device sync, not one per row
        done: list[_Row] = []
        keep: list[int] = []
        for i, r in enumerate(self.rows):
            if pending[i] in self.stop_ids:
                r.finish_reason = "stop"
                done.append(r)
            elif len(r.tokens) + 1 >= max_new_tokens:
                # The pending token is the last one allowed: take it without another forward pass.
                r.tokens.append(int(pending[i]))
                r.finish_reason = "length"
                done.append(r)
            else:
                keep.append(i)
        if not done:
            return []
        if keep:
            self._keep(keep)
        else:
            self._clear()
        return done


#: Vocabulary block of :func:`inverse_cdf`.
_CDF_BLOCK = 512


def inverse_cdf(probs: Any, u: Any, block: int = _CDF_BLOCK) -> Any:
    """Per row, the first token whose cumulative probability reaches ``u`` x the row's total.

    Inverse-transform sampling with a float64 running sum, computed in two levels: the sums of
    vocabulary blocks (summed in float64 without a float64 copy of the row), then the running
    sum within the one block that holds the target. The same pick as a float64 cumulative sum
    over the whole row, up to float64 rounding at a block edge; on a CPU the whole-row version
    (a float64 copy and scan of [rows, vocab] per step) cost about a fifth of a decoding step of
    the embedded model at 192 rows.
    """
    import torch

    n, vocab = probs.shape
    n_blocks = -(-vocab // block)
    if n_blocks * block != vocab:
        probs = torch.nn.functional.pad(probs, (0, n_blocks * block - vocab))
    blocks = probs.view(n, n_blocks, block)
    cum = blocks.sum(-1, dtype=torch.float64).cumsum(-1)  # [n, n_blocks]
    target = (u * cum[:, -1]).unsqueeze(-1)
    b = torch.searchsorted(cum, target).squeeze(-1).clamp_(max=n_blocks - 1)
    before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    rows = torch.arange(n, device=probs.device)
    within = blocks[rows, b].double().cumsum(-1) + before.unsqueeze(-1)
    j = torch.searchsorted(within, target).squeeze(-1).clamp_(max=block - 1)
    return (b * block + j).clamp_(max=vocab - 1)


@functools.cache
def _slab_layer_class() -> type:
    """The slab cache layer, built on first use so importing this module needs no transformers."""
    from transformers.cache_utils import DynamicLayer

    class _SlabLayer(DynamicLayer):
        """One layer's keys and values in preallocated buffers, written in place.

        Every row writes its new token at the same column ``slab.end``; attention reads the window
        ``[slab.start, slab.end]``. A growing ``DynamicCache`` instead allocates and copies the whole
        cache of every layer at every step (``torch.cat``), which on CPU costs as much as a quarter of
        a decoding step at batch 32.
        """

        def __init__(self, slab: Any) -> None:
            super().__init__()
            self.slab = slab
            self.k_buf: Any = None
            self.v_buf: Any = None

        def allocate(self, keys: Any, values: Any) -> None:
            import torch

            s = self.slab
            self.dtype, self.device = keys.dtype, keys.device
            # Zeros: masked columns must hold finite numbers (0 x NaN would poison the softmax).
            self.k_buf = torch.zeros(
                (s.max_rows, keys.shape[1], s.capacity, keys.shape[3]),
                dtype=keys.dtype,
                device=keys.device,
            )
            self.v_buf = torch.zeros(
                (s.max_rows, values.shape[1], s.capacity, values.shape[3]),
                dtype=values.dtype,
                device=values.device,
            )
            self.is_initialized = True

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.allocate(key_states, value_states)

        def update(
            self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any
        ) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.allocate(key_states, value_states)
            s = self.slab
            n, q = key_states.shape[0], key_states.shape[2]
            self.k_buf[:n, :, s.end : s.end + q] = key_states
            self.v_buf[:n, :, s.end : s.end + q] = value_states
            self.keys = self.k_buf[:n, :, s.start : s.end + q]
            self.values = self.v_buf[:n, :, s.start : s.end + q]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.slab.end - self.slab.start

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

    return _SlabLayer


class _SlabDecoder(_Decoder):
    """Continuous batching with an in-place cache: finished rows leave, new prompts take their slots.

    All rows share the cache columns: row ``i``'s tokens sit in ``[start, end)`` where its mask is 1
    (prompts are right-aligned to ``end`` when admitted; earlier columns are masked). A finished row
    is replaced by the last row (one row copy, not a copy of the batch); when the columns run out,
    the live window moves back to column 0. Only for models whose cache layers are all plain
    key/value stores.
    """

    can_refill = True

    def __init__(
        self,
        model: Any,
        pad_id: int,
        stop_ids: set[int],
        temperature: float,
        device: Any,
        *,
        n_layers: int,
        max_rows: int,
        max_prompt: int,
        max_new_tokens: int,
    ):
        super().__init__(model, pad_id, stop_ids, temperature, device)
        from transformers.cache_utils import Cache

        torch = self.torch
        span = max_prompt + max_new_tokens  # the most columns one live row can need
        self.max_rows = max_rows
        # A live window is never wider than ``span`` (after trimming), so after a move back to column 0
        # there are at least ``slack`` free columns again.
        self.capacity = span + max(_SLACK_MIN, int(span * _SLACK_SHARE))
        self.start = self.end = 0
        layer_class = _slab_layer_class()
        self.layers = [layer_class(self) for _ in range(n_layers)]
        self.cache = Cache(layers=list(self.layers))
        self.mask_buf = torch.zeros((max_rows, self.capacity), dtype=torch.long, device=device)

    @property
    def n(self) -> int:
        return len(self.rows)

    def _move_window(self, new_start: int) -> None:
        """Move the live columns ``[start, end)`` to begin at ``new_start``."""
        width, n = self.end - self.start, self.n
        src = slice(self.start, self.end)
        dst = slice(new_start, new_start + width)
        for layer in self.layers:
            if layer.is_initialized:
                layer.k_buf[:n, :, dst] = layer.k_buf[:n, :, src].clone()
                layer.v_buf[:n, :, dst] = layer.v_buf[:n, :, src].clone()
        self.mask_buf[:n, dst] = self.mask_buf[:n, src].clone()
        self.start, self.end = new_start, new_start + width

    def _trim(self) -> None:
        # Columns that are padding for every live row are never read again.
        live = self.mask_buf[: self.n, self.start : self.end].any(dim=0)
        if bool(live.any()):
            self.start += int(live.int().argmax())

    def admit(self, new_rows: list[_Row]) -> None:
        torch = self.torch
        cache, mask, first = self._prefill(new_rows)
        width, k = mask.shape[1], len(new_rows)
        if not self.rows:
            self.start = self.end = 0
        if self.end < width:  # room for the new prompts left of the write column
            self._move_window(self.start + width - self.end)
        rows = slice(self.n, self.n + k)
        cols = slice(self.end - width, self.end)
        for layer, new in zip(self.layers, cache.layers):
            if not layer.is_initialized:
                layer.allocate(new.keys, new.values)
            layer.k_buf[rows, :, cols] = new.keys
            layer.v_buf[rows, :, cols] = new.values
        self.mask_buf[rows] = 0
        self.mask_buf[rows, cols] = mask
        self.start = min(self.start, self.end - width)
        if self.rows:
            self.positions = torch.cat([self.positions, mask.sum(-1)])
            self.next_tokens = torch.cat([self.next_tokens, first])
        else:
            self.positions, self.next_tokens = mask.sum(-1), first
        self.rows.extend(new_rows)
        self._trim()

    def step(self) -> None:
        for r, t in zip(self.rows, self.next_tokens.tolist()):
            r.tokens.append(int(t))
        if self.end >= self.capacity:
            self._move_window(0)
            if self.end >= self.capacity:  # cannot happen while rows respect max_new_tokens
                raise RuntimeError(f"cache window of {self.end} columns exceeds {self.capacity}")
        n = self.n
        self.mask_buf[:n, self.end] = 1
        logits = self._forward(
            self.next_tokens.unsqueeze(-1),
            self.mask_buf[:n, self.start : self.end + 1],
            self.positions.unsqueeze(-1),
            self.cache,
        )
        self.end += 1
        self.positions = self.positions + 1
        self.next_tokens = self._sample(logits, self.rows)

    def _keep(self, keep: list[int]) -> None:
        torch = self.torch
        m = len(keep)
        kept = set(keep)
        holes = [i for i in range(m) if i not in kept]
        movers = [i for i in keep if i >= m]
        order = list(range(m))
        if holes:
            # Fill each freed slot below m with a live row from above m: one row copy per slot.
            src = torch.tensor(movers, device=self.device)
            dst = torch.tensor(holes, device=self.device)
            cols = slice(self.start, self.end)
            for layer in self.layers:
                layer.k_buf[dst, :, cols] = layer.k_buf[src, :, cols]
                layer.v_buf[dst, :, cols] = layer.v_buf[src, :, cols]
            self.mask_buf[dst] = self.mask_buf[src]
            for h, mv in zip(holes, movers):
                order[h] = mv
        index = torch.tensor(order, device=self.device)
        self.positions = self.positions[index]
        self.next_tokens = self.next_tokens[index]
        self.rows = [self.rows[i] for i in order]
        self._trim()


class _DynamicDecoder(_Decoder):
    """Finished rows leave a ``DynamicCache``; new prompts join only between waves.

    For caches that are not plain key/value stores (sliding-window or hybrid layers), whose
    lengths differ per layer and cannot be merged safely.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache: Any = None
        self.mask: Any = None  # [rows, cache_len] 1 = real token

    def admit(self, new_rows: list[_Row]) -> None:
        if self.rows:
            raise RuntimeError("this cache layout admits rows only into an empty batch")
        self.cache, self.mask, self.next_tokens = self._prefill(new_rows)
        self.positions = self.mask.sum(-1)
        self.rows = list(new_rows)

    def step(self) -> None:
        torch = self.torch
        for r, t in zip(self.rows, self.next_tokens.tolist()):
            r.tokens.append(int(t))
        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = self._forward(
            self.next_tokens.unsqueeze(-1), self.mask, self.positions.unsqueeze(-1), self.cache
        )
        self.positions = self.positions + 1
        self.next_tokens = self._sample(logits, self.rows)

    def _clear(self) -> None:
        super()._clear()
        self.cache = self.mask = None

    def _keep(self, keep: list[int]) -> None:
        index = self.torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.next_tokens = self.next_tokens[index]
        self.rows = [self.rows[i] for i in keep]


def _make_decoder(
    model: Any,
    pad_id: int,
    stop_ids: set[int],
    temperature: float,
    device: Any,
    *,
    batch_size: int,
    max_prompt: int,
    max_new_tokens: int,
) -> _Decoder:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = getattr(model, "config", None)
    probe = DynamicCache(config=config) if config is not None else DynamicCache()
    # The shared-column layout is only sound when every layer is a plain key/value store.
    if config is not None and probe.layers and all(type(la) is DynamicLayer for la in probe.layers):
        return _SlabDecoder(
            model,
            pad_id,
            stop_ids,
            temperature,
            device,
            n_layers=len(probe.layers),  # the cache layers the model's config asks for
            max_rows=batch_size,
            max_prompt=max_prompt,
            max_new_tokens=max_new_tokens,
        )
    return _DynamicDecoder(model, pad_id, stop_ids, temperature, device)


def _decode_all(
    lm: LanguageModel,
    requests: Sequence[Request],
    *,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    temperature: float,
    progress: bool,
) -> list[_Row]:
    import torch
    from tqdm.auto import tqdm

    model = lm.model
    device = lm.device if hasattr(lm, "device") else next(model.parameters()).device
    decoder = _make_decoder(
        model,
        tokenizer_pad_id(lm.tokenizer),
        stop_token_ids(lm),
        temperature,
        device,
        batch_size=batch_size,
        max_prompt=max((len(r.prompt_ids) for r in requests), default=1),
        max_new_tokens=max_new_tokens,
    )
    pending = deque(_Row(r, answer_rng(seed, r.answer_id)) for r in requests)
    finished: list[_Row] = []
    refill_at = max(1, int(batch_size * _REFILL_FRACTION))
    bar = tqdm(total=len(requests), desc="sampling", unit="answer", disable=not progress)
    n_tokens = 0
    with torch.inference_mode():
        while pending or decoder.rows:
            free = batch_size - len(decoder.rows)
            may_admit = not decoder.rows or (
                decoder.can_refill and (free >= refill_at or free >= len(pending))
            )
            if pending and free > 0 and may_admit:
                decoder.admit([pending.popleft() for _ in range(min(free, len(pending)))])
            else:
                decoder.step()
            done = decoder.retire(max_new_tokens)
            if done:
                finished.extend(done)
                n_tokens += sum(len(r.tokens) for r in done)
                bar.update(len(done))
                bar.set_postfix(tokens=n_tokens, refresh=False)
    bar.close()
    return finished


def check_sampling(
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
    seed: int,
    intervention: Intervention | None,
) -> str:
    """Validate sampling arguments (one sentence per bad value); return the intervention column."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if intervention is None:
        return ""
    if not callable(getattr(intervention, "spec", None)) or not callable(
        getattr(intervention, "apply", None)
    ):
        raise ConfigError(
            "an intervention needs spec() -> dict and apply(model) -> context manager"
        )
    return json.dumps(intervention.spec(), sort_keys=True)


def sample_answers(
    lm: LanguageModel,
    questions: Iterable[Any],
    n_per_paraphrase: int | None,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 32,
    temperature: float = 1.0,
    intervention: Intervention | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Sample answers to every paraphrase of every question; return the answers table.

    ``lm`` is a :class:`misdirection.models.LoadedModel`. ``n_per_paraphrase`` answers are drawn per
    paraphrase (None: each question's ``samples_per_paraphrase``). ``temperature=0`` is greedy.
    ``intervention`` (optional) has ``spec() -> dict`` and ``apply(model)`` returning a context
    manager that is active around all generation. Rows come in question / paraphrase / sample order.
    ``answer_tokens`` counts the answer's tokens without the end-of-turn token.
    """
    spec = check_sampling(max_new_tokens, batch_size, temperature, seed, intervention)
    requests = build_requests(lm, questions, n_per_paraphrase)
    active = intervention.apply(lm.model) if intervention is not None else contextlib.nullcontext()
    with active:
        rows = _decode_all(
            lm,
            requests,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            temperature=temperature,
            progress=progress,
        )

    return answers_table(
        lm,
        requests,
        {r.request.answer_id: (r.tokens, r.finish_reason) for r in rows},
        intervention_spec=spec,
        seed=seed,
        backend="hf",
    )


def answers_table(
    lm: Any,
    requests: Sequence[Request],
    outcomes: Mapping[str, tuple[Sequence[int], str]],
    *,
    intervention_spec: str,
    seed: int,
    backend: str,
) -> pd.DataFrame:
    """The answers table of decoded requests, one row per request in ``requests``' order.

    ``outcomes``: ``{answer_id: (answer tokens without the end-of-turn token, finish reason)}``.
    Every sampling backend builds its table here, so the text is decoded by the same tokenizer call
    and the columns are the same whichever engine decoded the tokens.
    """
    records = []
    for req in requests:
        tokens, finish_reason = outcomes[req.answer_id]
        records.append(
            {
                "answer_id": req.answer_id,
                "question_id": req.question_id,
                "paraphrase_index": req.paraphrase_index,
                "question": req.question,
                "system": req.system,
                "sample_index": req.sample_index,
                "answer": lm.tokenizer.decode(list(tokens), skip_special_tokens=True).strip(),
                "prompt_tokens": len(req.prompt_ids),
                "answer_tokens": len(tokens),
                "finish_reason": finish_reason,
                "model": str(getattr(lm, "spec", "")),
                "adapter": str(getattr(lm, "adapter_spec", "") or ""),
                "intervention": intervention_spec,
                "seed": seed,
                "backend": backend,
            }
        )
    df = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for col in ("paraphrase_index", "sample_index", "prompt_tokens", "answer_tokens", "seed"):
        df[col] = df[col].astype("int64")
    return df


def write_answers(df: pd.DataFrame, out: str, csv: bool = False) -> list[str]:
    """Write the answers table as Parquet (and CSV beside it when ``csv``); return the paths."""
    from pathlib import Path

    path = Path(out)
    if path.suffix.lower() != ".parquet":
        raise ConfigError(f"--out must end in .parquet, got {out}")
    with atomic_path(path) as tmp:  # a crash never leaves half a table behind
        df.to_parquet(tmp, index=False)
    written = [str(path)]
    if csv:
        csv_path = path.with_suffix(".csv")
        df.to_csv(csv_path, index=False)
        written.append(str(csv_path))
    return written
