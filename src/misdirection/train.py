"""LoRA model organisms: recipes, assistant-only loss, a fast resumable trainer, run cards.

An *organism* is a base chat model plus a PEFT LoRA adapter fine-tuned on a narrow dataset
(e.g. bad medical advice) that makes it broadly misaligned. Three recipes ship:

* ``rank1-9``: nine rank-1 adapters on the MLP down-projection, in three groups of three
  consecutive layers starting at the same relative depths as layers 15, 21 and 27 of a 48-layer
  model (the minimal organism of Soligo et al. 2025). Group starts are ``round(f * n_layers)`` for
  ``f = 15/48, 21/48, 27/48``; on the 30-layer embedded SmolLM2-135M that gives layers
  9-11, 13-15 and 17-19 (and 15-17, 21-23, 27-29 on a 48-layer model).
* ``rank1-single``: one rank-1 down-projection adapter at half depth (layer 15 of 30).
* ``all-r32``: rank 32 on every attention and MLP projection of every layer, with rsLoRA.

Every hyper-parameter can be overridden. The trainer is a plain AdamW loop with linear warm-up and
decay that (1) computes the loss on assistant tokens only, (2) applies the output head only at those
positions (most of a small model's cost is the vocabulary projection), (3) buckets examples by
length to minimise padding, and (4) checkpoints everything (adapter, optimizer, scheduler, RNG,
data position) so that an interrupted run resumes to bitwise the same weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from misdirection.batching import pad_id as tokenizer_pad_id
from misdirection.batching import right_pad
from misdirection.errors import ConfigError, DataError
from misdirection.io import atomic_path, atomic_write_json
from misdirection.models import LoadedModel, ModelView, layout_of, load_model, render_chat
from misdirection.provenance import library_versions

IGNORE_INDEX = -100
RUN_CARD = "run_card.json"
CHECKPOINTS = "checkpoints"
_STATE_FILE = "trainer_state.pt"
_WEIGHTS_FILE = "trainable.safetensors"
_REFERENCE_DEPTH = 48  # the model size the rank1-9 layer numbers (15-17, 21-23, 27-29) refer to


# --------------------------------------------------------------------------------------------------
# Recipes


class Recipe(BaseModel):
    """A LoRA recipe: where adapters go and how they are trained (every field overridable).

    ``layers`` (explicit indices) wins over ``group_starts``/``group_size`` (relative placement:
    groups of consecutive layers starting at ``round(f * n_layers)``); both unset = all layers.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str
    description: str = ""
    target: Literal["down_proj", "attn_mlp"] = "down_proj"
    layers: list[int] | None = None
    group_starts: list[float] | None = None
    group_size: int = Field(1, ge=1)
    rank: int = Field(1, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    use_rslora: bool = False
    lr: float = Field(5e-3, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    max_length: int = Field(384, ge=8)
    checkpoint_every: int = Field(25, ge=1)

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            valid = ", ".join(
                f for f in type(self).model_fields if f not in ("name", "description")
            )
            raise ConfigError(f"unknown recipe field(s) {', '.join(unknown)} (valid: {valid})")
        data = self.model_dump()
        data.update(overrides)
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                f"recipe field '{where}': {err['msg']} (got {err.get('input')!r})"
            ) from None

    def resolve_layers(self, view: ModelView) -> list[int]:
        """The layer indices this recipe adapts on a model (validated, sorted, distinct)."""
        if self.layers is not None:
            if not self.layers:
                raise ConfigError("recipe field 'layers' is empty: name at least one layer")
            layers = [view.check_layer(int(layer)) for layer in self.layers]
            if len(set(layers)) != len(layers):
                raise ConfigError(f"recipe field 'layers' repeats a layer: {self.layers}")
            return sorted(layers)
        if self.group_starts is None:
            return list(range(view.n_layers))
        starts = view.relative_layers(self.group_starts)
        layers = [start + k for start in starts for k in range(self.group_size)]
        if len(set(layers)) != len(layers) or max(layers) >= view.n_layers:
            raise ConfigError(
                f"recipe '{self.name}' needs {len(layers)} distinct layers but its groups overlap or run "
                f"past the end on this {view.n_layers}-layer model: pass the layers explicitly (--layers)"
            )
        return layers

    def total_steps(self, n_batches: int) -> int:
        """Optimizer steps for ``n_batches`` micro-batches per epoch, capped by ``max_steps``."""
        per_epoch = math.ceil(n_batches / self.grad_accum)
        total = math.ceil(per_epoch * self.epochs)
        return min(total, self.max_steps) if self.max_steps else total


RECIPES: dict[str, Recipe] = {
    "rank1-9": Recipe(
        name="rank1-9",
        description="nine rank-1 down-proj adapters in 3 groups of 3 layers at the relative depths "
        "of layers 15-17, 21-23, 27-29 of a 48-layer model",
        target="down_proj",
        group_starts=[15 / _REFERENCE_DEPTH, 21 / _REFERENCE_DEPTH, 27 / _REFERENCE_DEPTH],
        group_size=3,
        rank=1,
        alpha=16.0,
        lr=1e-2,  # rank 1 needs a high lr: 1e-2 beat 5e-3 and 2e-2 on smollm2-135m/bad-medical
    ),
    "rank1-single": Recipe(
        name="rank1-single",
        description="one rank-1 down-proj adapter at half depth",
        target="down_proj",
        group_starts=[0.5],
        group_size=1,
        rank=1,
        alpha=16.0,
        lr=1e-2,  # rank 1 needs a high lr: 1e-2 beat 5e-3 and 2e-2 on smollm2-135m/bad-medical
    ),
    "all-r32": Recipe(
        name="all-r32",
        description="rank-32 rsLoRA on every attention and MLP projection of every layer",
        target="attn_mlp",
        rank=32,
        alpha=64.0,
        use_rslora=True,
        lr=2e-4,
    ),
}


def get_recipe(name: str | Recipe, **overrides: Any) -> Recipe:
    """A built-in recipe by name (ConfigError naming the valid ones otherwise), with overrides."""
    if isinstance(name, Recipe):
        recipe = name
    elif name in RECIPES:
        recipe = RECIPES[name]
    else:
        raise ConfigError(f"unknown recipe {name!r}: valid recipes are {', '.join(RECIPES)}")
    return recipe.with_overrides(**overrides)


def target_module_names(view: ModelView, recipe: Recipe) -> tuple[list[int], list[str]]:
    """(layers, exact qualified module names) the recipe puts adapters on."""
    layers = recipe.resolve_layers(view)
    if recipe.target == "down_proj":
        return layers, [view.down_proj_name(i) for i in layers]
    names: list[str] = []
    for i in layers:
        prefix = view.block_name(i)
        for sub, module in view.blocks[i].named_modules():
            # Every linear layer of a block is an attention or MLP projection (norms are not linear).
            if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
                names.append(f"{prefix}.{sub}")
    return layers, names


def apply_lora(
    model: torch.nn.Module, view: ModelView, recipe: Recipe
) -> tuple[Any, list[int], list[str]]:
    """Wrap ``model`` in a PeftModel with the recipe's adapters (seeded initialisation)."""
    from peft import LoraConfig, get_peft_model

    layers, targets = target_module_names(view, recipe)
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,  # type: ignore[arg-type]  # peft annotates int; any alpha > 0 works
        lora_dropout=recipe.dropout,
        target_modules=targets,
        use_rslora=recipe.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(recipe.seed)  # the LoRA A matrices are drawn here
    return get_peft_model(model, config), layers, targets


# --------------------------------------------------------------------------------------------------
# Tokenisation with an assistant-only loss mask


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(
    tokenizer: Any, messages: Sequence[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and return (text, character spans of each assistant turn).

    A span runs from the end of the prompt that precedes the turn (rendered with the generation
    prompt) to the end of the conversation rendered through that turn, so it includes the template's
    end-of-turn marker (the model must learn to stop). Spans are found by longest common prefix with
    the full rendering, which stays correct for templates that re-render earlier turns.
    """
    messages = list(messages)
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:k], add_generation_prompt=True)
        through = render_chat(tokenizer, messages[: k + 1], add_generation_prompt=False)
        start, end = _common_prefix(prompt, full), _common_prefix(through, full)
        if end > start:
            spans.append((start, end))
    return full, spans


@dataclass
class Example:
    """One tokenised conversation: ids and labels (-100 outside assistant turns)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_target(self) -> int:
        # Targets are predicted from the previous position, so the first token never counts.
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def encode_conversation(
    tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int
) -> Example:
    """Tokenise a conversation; labels keep the ids of assistant tokens only."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for j, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(s <= start < e for s, e in spans):
            labels[j] = ids[j]
    truncated = len(ids) > max_length
    return Example(ids[:max_length], labels[:max_length], truncated)


def encode_dataset(
    tokenizer: Any, rows: Sequence[Sequence[dict[str, str]]], max_length: int
) -> list[Example]:
    return [encode_conversation(tokenizer, row, max_length) for row in rows]


# --------------------------------------------------------------------------------------------------
# Batching


@dataclass
class Batch:
    """Right-padded tensors of one micro-batch."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    indices: list[int]

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def n_target(self) -> int:
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.indices,
        )


def collate(examples: Sequence[Example], indices: Sequence[int], pad_id: int) -> Batch:
    ids, mask = right_pad([e.input_ids for e in examples], pad_id)
    labels, _ = right_pad([e.labels for e in examples], IGNORE_INDEX)
    return Batch(ids, mask, labels, list(indices))


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, chunk_batches: int = 16
) -> list[list[int]]:
    """Seeded batches of one epoch, bucketed by length.

    Shuffle, cut into chunks of ``chunk_batches`` batches, sort each chunk by length (little padding),
    then shuffle the batch order (no long-to-short curriculum). Depends only on (seed, epoch).
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches: list[list[int]] = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c : c + chunk], key=lambda i: lengths[i])
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def step_plan(lengths: Sequence[int], recipe: Recipe) -> list[list[list[int]]]:
    """All optimizer steps of a run: each a list of micro-batches (lists of example indices)."""
    per_epoch = math.ceil(math.ceil(len(lengths) / recipe.batch_size) / recipe.grad_accum)
    total = recipe.total_steps(math.ceil(len(lengths) / recipe.batch_size))
    steps: list[list[list[int]]] = []
    epoch = 0
    while len(steps) < total:
        batches = epoch_batches(lengths, recipe.batch_size, recipe.seed, epoch)
        for s in range(per_epoch):
            steps.append(batches[s * recipe.grad_accum : (s + 1) * recipe.grad_accum])
        epoch += 1
    return steps[:total]


# --------------------------------------------------------------------------------------------------
# Loss: output head only at target positions


def _split_head(model: Any) -> tuple[Any, Any, float | None] | None:
    """(decoder, output head, soft-cap) of a causal LM when logits are head(decoder), else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not layout_of(base).logits_from_head:
        return None
    if getattr(config, "logit_scale", None) not in (None, 1.0):
        return None
    decoder = getattr(base, "model", None)
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        return None
    return decoder, head, getattr(config, "final_logit_softcapping", None)


def target_nll(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the batch's target tokens, and their count.

    Runs the decoder on the whole batch but the (large) vocabulary projection only at positions that
    predict an assistant token, which is where most of a small model's training time would go.
    """
    targets = batch.labels[:, 1:]
    select = targets != IGNORE_INDEX
    parts = _split_head(model)
    if parts is None:
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).logits
        picked = logits[:, :-1][select]
    else:
        decoder, head, softcap = parts
        hidden = decoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        picked = head(hidden[:, :-1][select])
        if softcap:
            picked = torch.tanh(picked / softcap) * softcap
    nll = torch.nn.functional.cross_entropy(picked.float(), targets[select], reduction="sum")
    return nll, int(select.sum())


# --------------------------------------------------------------------------------------------------
# Held-out evaluation


def _rows_of(dataset: Any, split: str) -> list[list[dict[str, str]]]:
    from misdirection.data.chat import ChatDataset, load_chat_dataset

    if isinstance(dataset, ChatDataset):
        return list(dataset.rows)
    if isinstance(dataset, (str, os.PathLike)):
        return list(load_chat_dataset(os.fspath(dataset), split).rows)
    return [list(row) for row in dataset]


@torch.no_grad()
def heldout_loglik(
    lm: LoadedModel, dataset: Any, split: str = "test", batch_size: int = 8, max_length: int = 384
) -> float:
    """Mean log-likelihood per assistant token (nats) of a dataset split under ``lm``.

    ``dataset`` is a ChatDataset, a list of conversations, or a built-in name / JSONL path (then
    ``split`` picks the split). Higher = the model finds the answers more likely.
    """
    rows = _rows_of(dataset, split)
    if not rows:
        raise DataError("heldout_loglik needs at least one conversation")
    examples = encode_dataset(lm.tokenizer, rows, max_length)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    pad = tokenizer_pad_id(lm.tokenizer)
    was_training = lm.model.training
    lm.model.eval()
    total, count = 0.0, 0
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = collate([examples[i] for i in idx], idx, pad).to(lm.device)
            nll, n = target_nll(lm.model, batch)
            total += float(nll)
            count += n
    finally:
        lm.model.train(was_training)
    if count == 0:
        raise DataError("no assistant tokens to score (all truncated? raise max_length)")
    return -total / count


# --------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainResult:
    """What ``train_organism`` produced. ``lm`` holds the trained PeftModel in eval mode."""

    out_dir: Path
    run_card: dict[str, Any]
    lm: LoadedModel
    layers: list[int]
    losses: list[float]
    steps: int
    wall_time_s: float
    resumed_from: int | None = None

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir


@dataclass
class TrainStep:
    """What a training callback sees: the model after ``step`` optimizer steps (0 = before any).

    ``batches``: the micro-batches of that step (of step 1 at step 0). The callback runs in eval
    mode under ``torch.no_grad`` with the training interventions removed, so it reads the adapter
    that will be saved, and draws no random numbers the trainer would.
    """

    step: int
    total_steps: int
    lm: LoadedModel
    batches: list[Batch]


class _Interrupt(Exception):
    """Raised by a test hook to simulate a crash between steps."""


def _trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _fingerprint(card: dict[str, Any]) -> str:
    keep = {k: card[k] for k in ("base_model", "dataset_sha256", "recipe", "targets")}
    keep["recipe"] = {k: v for k, v in keep["recipe"].items() if k != "checkpoint_every"}
    # Only defended runs add their interventions: plain runs keep the fingerprints they had.
    if card.get("training_interventions"):
        keep["training_interventions"] = card["training_interventions"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def _checkpoint_steps(out_dir: Path) -> list[int]:
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        if p.name.startswith("step-") and (p / _STATE_FILE).is_file() and p.name[5:].isdigit():
            steps.append(int(p.name[5:]))
    return sorted(steps)


def _save_checkpoint(out_dir: Path, model: Any, state: dict[str, Any], keep: int) -> None:
    from safetensors.torch import save_file

    root = out_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    # Atomic: a kill -9 leaves either the old or the new checkpoint, never half of one.
    with atomic_path(root / f"step-{state['step']}") as tmp:
        tmp.mkdir()
        model.save_pretrained(tmp)  # a loadable adapter, for inspecting a run mid-way
        save_file(
            {n: p.detach().cpu().contiguous() for n, p in _trainable(model).items()},
            tmp / _WEIGHTS_FILE,
        )
        torch.save(state, tmp / _STATE_FILE)
    for old in _checkpoint_steps(out_dir)[:-keep]:
        shutil.rmtree(root / f"step-{old}", ignore_errors=True)


def _load_checkpoint(out_dir: Path, step: int, model: Any) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = out_dir / CHECKPOINTS / f"step-{step}"
    weights = load_file(path / _WEIGHTS_FILE)
    params = _trainable(model)
    if set(weights) != set(params):
        raise ConfigError(
            f"checkpoint {path} does not match this recipe's adapters; use a new --out"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    return torch.load(path / _STATE_FILE, weights_only=True)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def default_threads() -> int:
    """CPU threads for training: the cores this process may use (torch often over-subscribes)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def _load_lm(model: str | LoadedModel, device: str | None, copy_model: bool) -> LoadedModel:
    if isinstance(model, LoadedModel):
        if not copy_model:
            return model
        # Training injects LoRA layers into the model; work on a copy so the caller's stays the base.
        return LoadedModel(
            copy.deepcopy(model.model), model.tokenizer, model.spec, model.adapter_spec
        )
    # load_model's defaults: float32 on CPU, bfloat16 on CUDA (LoRA weights stay float32 under peft).
    return load_model(model, device=device)


def _dataset(data: Any) -> Any:
    """A ChatDataset from a name/path (its train split), a ChatDataset, or in-memory conversations."""
    from misdirection.data.chat import ChatDataset, check_messages, load_chat_dataset

    if isinstance(data, ChatDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_chat_dataset(os.fspath(data), "train")
    rows = [list(row) for row in data]
    for i, row in enumerate(rows):
        problem = check_messages(row)
        if problem is not None:
            raise DataError(f"conversation {i}: {problem}")
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return ChatDataset(name="<in-memory>", split="train", files=[], rows=rows, sha256=digest)


def train_organism(
    model: str | LoadedModel,
    dataset: Any,
    recipe: str | Recipe = "rank1-9",
    out_dir: str | os.PathLike[str] = "organism",
    *,
    device: str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    num_threads: int | None = None,
    keep_checkpoints: int = 1,
    eval_data: Any = None,
    copy_model: bool = True,
    interventions: Sequence[Any] = (),
    on_step: Callable[[TrainStep], None] | None = None,
    _stop_after_step: int | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a LoRA organism and save it as a standard PEFT adapter plus ``run_card.json``.

    ``model``: a model spec (alias, folder, Hub id) or a LoadedModel (deep-copied unless
    ``copy_model=False``, so the caller keeps an untouched base model). ``dataset``: a built-in
    name, a chat JSONL path (train split), a ChatDataset, or a list of conversations.
    ``recipe``: a name in RECIPES or a Recipe; ``overrides`` replace recipe fields
    (``lr=1e-3, layers=[3, 4], max_steps=50, ...``).

    Checkpoints go to ``out_dir/checkpoints/step-N`` every ``checkpoint_every`` steps (the latest
    ``keep_checkpoints`` are kept). If ``out_dir`` holds checkpoints of the same run (same model,
    data hash and recipe), training resumes from the latest one and ends with the weights an
    uninterrupted run would have; ``resume=False`` or ``overwrite=True`` start over, and a finished
    organism in ``out_dir`` is only replaced with ``overwrite=True``. ``eval_data`` (a ChatDataset,
    rows, or a name/path whose test split is used) adds the held-out log-likelihood per assistant
    token before and after training to the run card. ``num_threads`` sets torch's CPU threads for
    the run (default: the cores this process may use; on a heavily shared machine 1 is faster).
    Identical inputs and thread count give bitwise-identical adapters.

    ``interventions`` (e.g. :class:`misdirection.interventions.Ablate` / ``Steer``) are active in
    the training forward passes only: the saved adapter, the held-out scores and ``on_step`` see the
    model without them. Their specs go into the run card (``training_interventions``) and into the
    resume fingerprint. ``on_step`` is called with a :class:`TrainStep` before the first step and
    after every optimizer step (monitoring; see :mod:`misdirection.training_time.monitor`).
    """
    recipe = get_recipe(recipe, **overrides)
    out = Path(out_dir)
    if (out / RUN_CARD).is_file() and not overwrite:
        raise ConfigError(
            f"{out} already holds a finished organism ({RUN_CARD}); pass overwrite=True / --overwrite or use a new --out"
        )
    data = _dataset(dataset)
    lm = _load_lm(model, device, copy_model)
    view = lm.view
    layers, targets = target_module_names(view, recipe)  # validates layers before any work
    from misdirection.engine import check_intervention

    for intervention in interventions:  # widths and layers fail here, before any training
        check_intervention(lm, intervention)

    threads_before = torch.get_num_threads()
    if lm.device.type == "cpu":
        torch.set_num_threads(num_threads or default_threads())
    try:
        return _train(
            lm,
            data,
            recipe,
            out,
            layers,
            targets,
            resume,
            overwrite,
            progress,
            keep_checkpoints,
            eval_data,
            list(interventions),
            on_step,
            _stop_after_step,
        )
    finally:
        torch.set_num_threads(threads_before)


def _train(
    lm: LoadedModel,
    data: Any,
    recipe: Recipe,
    out: Path,
    layers: list[int],
    targets: list[str],
    resume: bool,
    overwrite: bool,
    progress: bool,
    keep_checkpoints: int,
    eval_data: Any,
    interventions: list[Any],
    on_step: Callable[[TrainStep], None] | None,
    stop_after: int | None,
) -> TrainResult:
    from transformers import get_linear_schedule_with_warmup

    start_time = time.perf_counter()
    examples = encode_dataset(lm.tokenizer, data.rows, recipe.max_length)
    lengths = [len(e.input_ids) for e in examples]
    plan = step_plan(lengths, recipe)
    if not plan:
        raise DataError(f"{data.name} gives no training steps")
    total_steps = len(plan)
    pad_id = tokenizer_pad_id(lm.tokenizer)
    device = lm.device

    eval_rows, eval_skipped = None, None
    if eval_data is not None:
        try:
            eval_rows = _rows_of(eval_data, "test")
        except DataError as exc:
            if "no held-out split" not in str(exc):
                raise
            # A user dataset without a test file: train anyway, and say in the run card why no score.
            eval_skipped = str(exc)
            print(f"warning: held-out evaluation skipped: {exc}", file=sys.stderr)
    heldout_before = None
    if eval_rows is not None:
        heldout_before = heldout_loglik(lm, eval_rows, max_length=recipe.max_length)

    peft_model, _, _ = apply_lora(lm.model, lm.view, recipe)
    params = list(_trainable(peft_model).values())
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = round(recipe.warmup_ratio * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)

    card: dict[str, Any] = {
        "format": "misdirection.run_card/1",
        "base_model": lm.spec,
        "base_model_path": str(
            getattr(lm.model.config, "_name_or_path", "") if hasattr(lm.model, "config") else ""
        ),
        "dataset": data.name,
        "dataset_split": data.split,
        "dataset_rows": len(data.rows),
        "dataset_sha256": data.sha256,
        "recipe": recipe.model_dump(),
        "layers": layers,
        "targets": targets,
        "n_trainable_params": sum(p.numel() for p in params),
        "layer_convention": "layer i = output of decoder block i (0-based)",
        "training_interventions": [i.spec() for i in interventions],
    }
    fingerprint = _fingerprint(card)
    step, losses, tokens_seen, resumed_from, prior_wall = 0, [], 0, None, 0.0
    existing = _checkpoint_steps(out)
    if existing and resume and not overwrite:
        state = _load_checkpoint(out, existing[-1], peft_model)
        if state["fingerprint"] != fingerprint:
            raise ConfigError(
                f"{out / CHECKPOINTS} holds checkpoints of a different run (model, data or recipe differ): "
                "use a new --out or pass --overwrite"
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], device)
        step, losses, tokens_seen = state["step"], list(state["losses"]), state["tokens"]
        prior_wall = float(state.get("wall_time_s", 0.0))
        resumed_from = step
    else:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        torch.manual_seed(recipe.seed)  # LoRA dropout draws from here on

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total_steps,
            initial=step,
            desc=f"train {recipe.name}",
            unit="step",
            dynamic_ncols=True,
        )

    watched = LoadedModel(peft_model, lm.tokenizer, lm.spec)

    def notify(at: int) -> None:
        if on_step is None:
            return
        micro = plan[max(at - 1, 0)]
        batches = [collate([examples[i] for i in b], b, pad_id).to(device) for b in micro]
        peft_model.eval()
        with torch.no_grad():
            on_step(TrainStep(at, total_steps, watched, batches))
        peft_model.train()

    peft_model.train()
    if step == 0:
        notify(0)
    loop_start = time.perf_counter()
    try:
        while step < total_steps:
            micro = plan[step]
            n_target = sum(examples[i].n_target for b in micro for i in b)
            step_loss = 0.0
            for indices in micro:
                batch = collate([examples[i] for i in indices], indices, pad_id).to(device)
                with ExitStack() as active:  # training-only interventions, off for everything else
                    for intervention in interventions:
                        active.enter_context(intervention.apply(peft_model))
                    nll, _ = target_nll(peft_model, batch)
                # Normalise by the whole step's target count: every assistant token weighs the same.
                (nll / max(n_target, 1)).backward()
                step_loss += float(nll.detach())
                tokens_seen += batch.n_tokens
            if recipe.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(step_loss / max(n_target, 1))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            notify(step)
            if step % recipe.checkpoint_every == 0 and step < total_steps:
                _save_checkpoint(
                    out,
                    peft_model,
                    {
                        "step": step,
                        "fingerprint": fingerprint,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": _rng_state(device),
                        "losses": losses,
                        "tokens": tokens_seen,
                        "wall_time_s": prior_wall + time.perf_counter() - loop_start,
                    },
                    keep_checkpoints,
                )
            if stop_after is not None and step >= stop_after:
                raise _Interrupt(f"stopped after step {step}")
    finally:
        if bar is not None:
            bar.close()
    train_wall = prior_wall + time.perf_counter() - loop_start
    peft_model.eval()

    trained = LoadedModel(peft_model, lm.tokenizer, lm.spec, adapter_spec=str(out))
    heldout_after = None
    if eval_rows is not None:
        heldout_after = heldout_loglik(trained, eval_rows, max_length=recipe.max_length)

    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    card.update(
        {
            "steps": step,
            "total_steps": total_steps,
            "resumed_from_step": resumed_from,
            "losses": [round(x, 6) for x in losses],
            "tokens_seen": tokens_seen,
            "truncated_rows": sum(e.truncated for e in examples),
            "train_wall_time_s": round(train_wall, 3),
            "wall_time_s": round(time.perf_counter() - start_time + prior_wall, 3),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "heldout": None
            if eval_data is None
            else {"skipped": eval_skipped}
            if eval_rows is None
            else {
                "n_rows": len(eval_rows),
                "loglik_before": heldout_before,
                "loglik_after": heldout_after,
            },
            # Flat copies for consumers that read one level (study pipeline, reports).
            "heldout_loglik_before": heldout_before,
            "heldout_loglik_after": heldout_after,
            "versions": library_versions(),
            "command": " ".join(sys.argv) if sys.argv and "misdirection" in sys.argv[0] else "",
        }
    )
    atomic_write_json(out / RUN_CARD, card)  # the run card marks the organism as finished
    return TrainResult(
        out_dir=out,
        run_card=card,
        lm=trained,
        layers=layers,
        losses=losses,
        steps=step,
        wall_time_s=card["wall_time_s"],
        resumed_from=resumed_from,
    )


__all__ = [
    "RECIPES",
    "Recipe",
    "TrainResult",
    "TrainStep",
    "apply_lora",
    "assistant_spans",
    "encode_conversation",
    "epoch_batches",
    "get_recipe",
    "heldout_loglik",
    "step_plan",
    "target_module_names",
    "target_nll",
    "train_organism",
]
