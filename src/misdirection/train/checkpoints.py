"""Trainer checkpoints: atomic, complete (adapter, optimizer, scheduler, RNG, data position), so
that an interrupted run resumes to bitwise the same weights."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from misdirection.errors import ConfigError
from misdirection.io import atomic_path

CHECKPOINTS = "checkpoints"
_STATE_FILE = "trainer_state.pt"
_WEIGHTS_FILE = "trainable.safetensors"


def _trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _fingerprint(card: dict[str, Any]) -> str:
    keep = {k: card[k] for k in ("base_model", "dataset_sha256", "recipe", "targets")}
    keep["recipe"] = {k: v for k, v in keep["recipe"].items() if k != "checkpoint_every"}
    # Only defended runs add their interventions: plain runs keep the fingerprints they had.
    if card.get("training_interventions"):
        keep["training_interventions"] = card["training_interventions"]
    # Likewise only a run in another dtype than float32 adds it (its steps differ from fp32's).
    if card.get("dtype", "float32") != "float32":
        keep["dtype"] = card["dtype"]
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
