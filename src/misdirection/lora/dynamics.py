"""Training dynamics from checkpoints: the norms of A and B per adapter at every saved checkpoint
of a training run, their cosines with the final weights and the step where B's direction settles
(:func:`training_dynamics`, :class:`Dynamics`), read straight from the saved PEFT
``adapter_model.safetensors`` files without loading a model."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from misdirection.errors import DataError

_STEP_DIR = re.compile(r"^(?:step|checkpoint)-(\d+)$")
_WEIGHT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_LAYER_IN_KEY = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def _read_adapter_weights(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """{label: {"A": [r, d_in], "B": [d_out, r]}} from a saved PEFT adapter folder."""
    from safetensors.numpy import load_file

    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        raise DataError(f"{folder} has no adapter_model.safetensors (not a saved PEFT adapter)")
    try:
        tensors = load_file(str(file))
    except Exception:  # noqa: BLE001 -- bf16 tensors: numpy has no bfloat16; torch reads them
        from safetensors.torch import load_file as load_torch

        tensors = {k: v.float().numpy() for k, v in load_torch(str(file)).items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _WEIGHT_KEY.match(key)
        if not m:
            continue
        module = m.group("module")
        lm = _LAYER_IN_KEY.search(module)
        label = f"L{lm.group(1)}.{module.rsplit('.', 1)[-1]}" if lm else module
        out.setdefault(label, {})[m.group("ab")] = value.astype(np.float64)
    if not out:
        raise DataError(f"{file} holds no LoRA weights (no '...lora_A.weight' keys)")
    return out


@dataclass
class Dynamics:
    """Norms and directions of A and B over training checkpoints.

    ``table``: step, adapter, layer, a_norm, b_norm, a_cos_final, b_cos_final (signed cosine of the
    flattened weight with the final one; NaN for a zero weight, e.g. B at initialisation).
    ``settle``: adapter, settle_step = the first checkpoint step from which B's cosine with the
    final B stays above ``threshold`` at every later checkpoint (NaN if it never does), and
    rotation_step = the checkpoint step of the largest single drop in angle to the final B.
    """

    table: pd.DataFrame
    settle: pd.DataFrame
    threshold: float
    final: str


def _cos(x: np.ndarray, y: np.ndarray) -> float:
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    return float((x.ravel() @ y.ravel()) / (nx * ny)) if nx > 0 and ny > 0 else math.nan


def find_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every saved checkpoint under ``RUN/checkpoints/step-N`` (also
    ``checkpoint-N``, directly in RUN or under ``checkpoints/``), sorted by step."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: no such run folder")
    found: dict[int, Path] = {}
    for parent in (run / "checkpoints", run):
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            m = _STEP_DIR.match(child.name)
            if m and child.is_dir():
                folder = (
                    child / "adapter"
                    if (child / "adapter" / "adapter_model.safetensors").is_file()
                    else child
                )
                if (folder / "adapter_model.safetensors").is_file():
                    found.setdefault(int(m.group(1)), folder)
    if not found:
        raise DataError(
            f"{run} has no checkpoints "
            f"(expected {run}/checkpoints/step-N/adapter_model.safetensors)"
        )
    return sorted(found.items())


def training_dynamics(run_dir: str | Path, threshold: float = 0.9) -> Dynamics:
    """Norms of A and B per adapter at every checkpoint, cosines with the final weights, and the
    step where B's direction settles (see :class:`Dynamics`). The final adapter is the run's own
    ``adapter_model.safetensors`` (``RUN/`` or ``RUN/adapter/``) when present, else the last
    checkpoint."""
    run = Path(run_dir)
    checkpoints = find_checkpoints(run)
    final_dir = next(
        (p for p in (run, run / "adapter") if (p / "adapter_model.safetensors").is_file()),
        checkpoints[-1][1],
    )
    final = _read_adapter_weights(final_dir)
    rows = []
    for step, folder in checkpoints:
        weights = _read_adapter_weights(folder)
        for label, w in weights.items():
            if label not in final:
                raise DataError(
                    f"checkpoint {folder} has adapter {label}, which the final adapter lacks"
                )
            lm = re.match(r"L(\d+)\.", label)
            rows.append(
                {
                    "step": step,
                    "adapter": label,
                    "layer": int(lm.group(1)) if lm else None,
                    "a_norm": float(np.linalg.norm(w["A"])),
                    "b_norm": float(np.linalg.norm(w["B"])),
                    "a_cos_final": _cos(w["A"], final[label]["A"]),
                    "b_cos_final": _cos(w["B"], final[label]["B"]),
                }
            )
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    table = table.sort_values(["step", "layer", "adapter"], kind="stable").reset_index(drop=True)
    settle_rows = []
    for label, g in table.groupby("adapter", sort=False):
        g = g.sort_values("step")
        cos = g["b_cos_final"].to_numpy()
        steps = g["step"].to_numpy()
        above = np.nan_to_num(cos, nan=-2.0) > threshold
        settle = math.nan
        # Walk back from the end while the cosine stays above the threshold.
        k = len(above)
        while k > 0 and above[k - 1]:
            k -= 1
        if k < len(above):
            settle = int(steps[k])
        angle = np.degrees(np.arccos(np.clip(np.nan_to_num(cos, nan=0.0), -1, 1)))
        rotation = (
            int(steps[1:][int(np.argmax(angle[:-1] - angle[1:]))]) if len(angle) > 1 else math.nan
        )
        settle_rows.append({"adapter": label, "settle_step": settle, "rotation_step": rotation})
    return Dynamics(table, pd.DataFrame(settle_rows), threshold, str(final_dir))
