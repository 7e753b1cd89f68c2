"""Fast, deterministic sampling of answers to question sets: the answers table.

Our own decoding loop over the model's forward pass with a KV cache, instead of
``model.generate``, for two reasons:

* **Finished answers stop costing compute.** A finished row leaves the batch and the cache at once,
  and its slot is refilled with pending prompts (continuous batching), so a batch never keeps
  decoding padding after an answer ends. Models whose cache is not a plain per-layer key/value store
  (sliding-window or hybrid layers) still drop finished rows but refill only between waves.
* **Determinism independent of batching.** Every answer draws its random numbers from its own
  generator, seeded from ``(seed, answer_id)``, and samples by inverse CDF with one uniform per
  token. The same seed gives the same table whatever the batch size or the order answers finish in,
  up to floating-point differences between batched and unbatched matrix products (in practice
  identical on CPU in float32).

The answers table (one row per answer) follows the project's shared schema; see :data:`COLUMNS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from misdirection.errors import ConfigError, DataError

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
)

# Refill once this share of the batch is free: one prefill (and one cache copy) per group of
# freed slots rather than per slot.
_REFILL_FRACTION = 0.25


@runtime_checkable
class Intervention(Protocol):
    """What sampling needs from an intervention (steering, ablation...): a spec and a context."""

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description, recorded in the ``intervention`` column."""
        ...

    def apply(self, model: Any) -> Any:
        """A context manager that modifies ``model`` while active (e.g. adds forward hooks)."""
        ...


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
    lm: Any, questions: Iterable[Any], n_per_paraphrase: int | None
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


def stop_token_ids(lm: Any) -> set[int]:
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
    """Continuous-batching decoder over ``model.forward`` with a DynamicCache."""

    def __init__(
        self, model: Any, pad_id: int, stop_ids: set[int], temperature: float, device: Any
    ):
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.torch = torch
        self.model = model
        self.pad_id = pad_id
        self.stop_ids = torch.tensor(sorted(stop_ids), device=device)
        self.temperature = temperature
        self.device = device
        self.config = getattr(model, "config", None)
        probe = DynamicCache(config=self.config) if self.config is not None else DynamicCache()
        # Merging caches of different lengths is only sound for plain key/value layers.
        self.can_refill = all(type(layer) is DynamicLayer for layer in probe.layers)
        self.cache: Any = None
        self.mask: Any = None  # [rows, cache_len] 1 = real token
        self.positions: Any = None  # [rows] position id of the next fed token
        self.next_tokens: Any = None  # [rows] sampled, not yet fed
        self.rows: list[_Row] = []
        self.keep_last_logits = True

    # -- forward passes ------------------------------------------------------------------------
    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        kwargs = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "past_key_values": cache,
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
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        cdf = probs.double().cumsum(dim=-1)
        u = torch.tensor([r.rng.random() for r in rows], dtype=torch.float64, device=logits.device)
        picks = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
        return picks.clamp_(max=logits.shape[-1] - 1)

    def admit(self, new_rows: list[_Row]) -> None:
        """Prefill new prompts and merge them into the running batch."""
        torch = self.torch
        from transformers import DynamicCache

        width = max(len(r.request.prompt_ids) for r in new_rows)
        ids = torch.full((len(new_rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new_rows), width), dtype=torch.long)
        for i, r in enumerate(new_rows):
            p = r.request.prompt_ids
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp_(min=0)
        cache = DynamicCache(config=self.config) if self.config is not None else DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        first = self._sample(logits, new_rows)
        if not self.rows:
            self.cache, self.mask, self.rows = cache, mask, list(new_rows)
            self.positions = mask.sum(-1)
            self.next_tokens = first
            return
        self._merge(cache, mask)
        self.positions = torch.cat([self.positions, mask.sum(-1)])
        self.next_tokens = torch.cat([self.next_tokens, first])
        self.rows.extend(new_rows)

    def _merge(self, cache: Any, mask: Any) -> None:
        # Left-pad the shorter of (running cache, new cache) so both end at the same column, then
        # stack the rows; padded columns are masked out and never attended to.
        torch = self.torch
        old_len, new_len = self.mask.shape[1], mask.shape[1]
        length = max(old_len, new_len)

        def pad(t: Any, n: int, dim: int) -> Any:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for old_layer, new_layer in zip(self.cache.layers, cache.layers):
            old_layer.keys = torch.cat(
                [pad(old_layer.keys, length - old_len, 2), pad(new_layer.keys, length - new_len, 2)]
            )
            old_layer.values = torch.cat(
                [
                    pad(old_layer.values, length - old_len, 2),
                    pad(new_layer.values, length - new_len, 2),
                ]
            )
        self.mask = torch.cat([pad(self.mask, length - old_len, 1), pad(mask, length - new_len, 1)])

    def step(self) -> None:
        """Feed every row's last sampled token and sample the next one."""
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

    def retire(self, max_new_tokens: int) -> list[_Row]:
        """Remove rows whose pending token ends them (a stop token, or the length limit)."""
        torch = self.torch
        if not self.rows:
            return []
        is_stop = torch.isin(self.next_tokens, self.stop_ids).tolist()
        pending = self.next_tokens.tolist()  # one device sync, not one per row
        done: list[_Row] = []
        keep: list[int] = []
        for i, r in enumerate(self.rows):
            if is_stop[i]:
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
        if not keep:
            self.cache = self.mask = self.positions = self.next_tokens = None
            self.rows = []
            return done
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.next_tokens = self.next_tokens[index]
        self.rows = [self.rows[i] for i in keep]
        # Drop leading columns that are padding for every remaining row.
        first = int(self.mask.any(dim=0).int().argmax())
        if first > 0 and self.can_refill:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]
        return done


def _decode_all(
    lm: Any,
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
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    decoder = _Decoder(model, pad_id, stop_token_ids(lm), temperature, device)
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


def sample_answers(
    lm: Any,
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
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    spec = ""
    if intervention is not None:
        if not callable(getattr(intervention, "spec", None)) or not callable(
            getattr(intervention, "apply", None)
        ):
            raise ConfigError(
                "an intervention needs spec() -> dict and apply(model) -> context manager"
            )
        spec = json.dumps(intervention.spec(), sort_keys=True)

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

    by_id = {r.request.answer_id: r for r in rows}
    records = []
    for req in requests:
        row = by_id[req.answer_id]
        tokens = row.tokens  # never holds the end-of-turn token
        records.append(
            {
                "answer_id": req.answer_id,
                "question_id": req.question_id,
                "paraphrase_index": req.paraphrase_index,
                "question": req.question,
                "system": req.system,
                "sample_index": req.sample_index,
                "answer": lm.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                "prompt_tokens": len(req.prompt_ids),
                "answer_tokens": len(tokens),
                "finish_reason": row.finish_reason,
                "model": str(getattr(lm, "spec", "")),
                "adapter": str(getattr(lm, "adapter_spec", "") or ""),
                "intervention": spec,
                "seed": seed,
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: a crash never leaves half a table behind
    written = [str(path)]
    if csv:
        csv_path = path.with_suffix(".csv")
        df.to_csv(csv_path, index=False)
        written.append(str(csv_path))
    return written
