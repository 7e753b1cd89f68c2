"""The trainer: a plain AdamW loop with linear warm-up and decay, resumable, writing a run card."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from misdirection.batching import pad_id as tokenizer_pad_id
from misdirection.errors import ConfigError, DataError
from misdirection.io import atomic_write_json
from misdirection.models import LoadedModel, dtype_name, load_model
from misdirection.provenance import library_versions
from misdirection.train.checkpoints import (
    CHECKPOINTS,
    _checkpoint_steps,
    _fingerprint,
    _load_checkpoint,
    _rng_state,
    _save_checkpoint,
    _set_rng_state,
    _trainable,
)
from misdirection.train.encoding import Batch, collate, encode_dataset, step_plan
from misdirection.train.loss import _rows_of, heldout_loglik, target_nll
from misdirection.train.recipes import Recipe, apply_lora, get_recipe, target_module_names

RUN_CARD = "run_card.json"


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


class AdapterSnapshots:
    """An ``on_step`` callback that saves the adapter every ``every`` steps to ``folder/step-N``.

    For curves of a behaviour against training (each snapshot is a standard PEFT adapter). Steps
    a resumed run skipped are not saved again; :meth:`steps` lists what is there.
    """

    def __init__(self, every: int, folder: str | Path) -> None:
        if every < 1:
            raise ConfigError(f"snapshots every {every} steps: must be >= 1")
        self.every = every
        self.folder = Path(folder)

    def __call__(self, event: TrainStep) -> None:
        if event.step > 0 and event.step % self.every == 0:
            event.lm.model.save_pretrained(self.folder / f"step-{event.step}")

    def steps(self) -> list[int]:
        """The steps whose adapters were saved, in order."""
        if not self.folder.is_dir():
            return []
        return sorted(
            int(p.name.removeprefix("step-"))
            for p in self.folder.iterdir()
            if p.name.startswith("step-") and (p / "adapter_config.json").is_file()
        )


class _Interrupt(Exception):
    """Raised by a test hook to simulate a crash between steps."""


def default_threads() -> int:
    """CPU threads for training: the cores this process may use (torch often over-subscribes)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def _load_lm(
    model: str | LoadedModel,
    device: str | None,
    dtype: torch.dtype | str | None,
    copy_model: bool,
) -> LoadedModel:
    if isinstance(model, LoadedModel):
        if not copy_model:
            return model
        # Training injects LoRA layers into the model; work on a copy so the caller's stays the base.
        return LoadedModel(
            copy.deepcopy(model.model), model.tokenizer, model.spec, model.adapter_spec
        )
    # The LoRA weights stay float32 whatever the base model's dtype (peft upcasts them), and so do
    # the loss, the gradients of the trained weights and the optimizer's state.
    return load_model(model, device=device, dtype=dtype)


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
    dtype: torch.dtype | str | None = None,
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
    ``dtype`` (for a model spec; a LoadedModel trains in its own): the base model's dtype, as
    :func:`misdirection.models.resolve_dtype` reads it (``"auto"``: bf16 where the device computes
    it fast, else fp32; None: fp32 on a CPU); the run card records it. ``recipe``: a name in RECIPES or a Recipe; ``overrides``
    replace recipe fields
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
    lm = _load_lm(model, device, dtype, copy_model)
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


def _heldout_rows(eval_data: Any) -> tuple[list[Any] | None, str | None]:
    """The held-out conversations to score, or why there are none (a dataset without a test split)."""
    if eval_data is None:
        return None, None
    try:
        return _rows_of(eval_data, "test"), None
    except DataError as exc:
        if "no held-out split" not in str(exc):
            raise
        # A user dataset without a test file: train anyway, and say in the run card why no score.
        print(f"warning: held-out evaluation skipped: {exc}", file=sys.stderr)
        return None, str(exc)


def _run_card(
    lm: LoadedModel,
    data: Any,
    recipe: Recipe,
    layers: list[int],
    targets: list[str],
    params: list[torch.nn.Parameter],
) -> dict[str, Any]:
    """What identifies a run (its fingerprint is computed from this) before any step is taken."""
    return {
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
        "dtype": dtype_name(next(lm.view.blocks[0].parameters()).dtype),
        "layer_convention": "layer i = output of decoder block i (0-based)",
    }


def _optimizer_step(
    model: Any,
    micro: list[list[int]],
    examples: list[Any],
    pad_id: int,
    device: torch.device,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    recipe: Recipe,
    interventions: Sequence[Any] = (),
) -> tuple[float, int]:
    """One optimizer step over its micro-batches: (mean loss per target token, tokens seen);
    ``interventions`` are active in its forward passes only."""
    n_target = sum(examples[i].n_target for b in micro for i in b)
    step_loss, tokens = 0.0, 0
    for indices in micro:
        batch = collate([examples[i] for i in indices], indices, pad_id).to(device)
        with ExitStack() as active:  # training-only interventions, off for everything else
            for intervention in interventions:
                active.enter_context(intervention.apply(model))
            nll, _ = target_nll(model, batch)
        # Normalise by the whole step's target count: every assistant token weighs the same.
        (nll / max(n_target, 1)).backward()
        step_loss += float(nll.detach())
        tokens += batch.n_tokens
    if recipe.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss / max(n_target, 1), tokens


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

    eval_rows, eval_skipped = _heldout_rows(eval_data)
    heldout_before = None
    if eval_rows is not None:
        heldout_before = heldout_loglik(lm, eval_rows, max_length=recipe.max_length)

    peft_model, _, _ = apply_lora(lm.model, lm.view, recipe)
    params = list(_trainable(peft_model).values())
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = round(recipe.warmup_ratio * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)

    card = _run_card(lm, data, recipe, layers, targets, params)
    card["training_interventions"] = [i.spec() for i in interventions]
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
            loss, n_tokens = _optimizer_step(
                peft_model,
                plan[step],
                examples,
                pad_id,
                device,
                params,
                optimizer,
                scheduler,
                recipe,
                interventions,
            )
            tokens_seen += n_tokens
            step += 1
            losses.append(loss)
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
