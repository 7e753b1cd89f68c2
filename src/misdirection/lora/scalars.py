"""Adapter scalars: for a rank-1 adapter ``y = W x + s * B (A x)`` the scalar we report is
``s * (A x)``, the exact coefficient of ``b = B[:, 0]`` in the layer's output, so ``scalar * b`` is
the adapter's whole contribution at that token (dividing by the ``scaling`` recorded in
:class:`AdapterScalars` gives the raw ``A x``). :func:`adapter_scalars` reads it at every answer
token with forward hooks; :class:`AdapterScalars` holds the per-token table and per-answer means."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from misdirection.batching import pad_id, right_pad
from misdirection.errors import ConfigError
from misdirection.io import atomic_write_json
from misdirection.lora.adapters import find_lora_adapters
from misdirection.lora.encoding import (
    _batches,
    _eval_mode,
    _StopForward,
    encode_answers,
)
from misdirection.protocols import LanguageModel


@dataclass
class AdapterScalars:
    """Per-token adapter scalars and their per-answer means.

    ``tokens``: tidy table (answer_id, token_index, adapter, layer, scalar), ``token_index``
    counting the answer's tokens from 0; ``scalar = scaling * (A x)``. ``means``: answer_id x
    adapter (wide, mean over the answer's tokens; answers with no token get NaN). ``adapters``:
    labels in layer order; ``scaling``: label -> peft scaling used.
    """

    tokens: pd.DataFrame
    means: pd.DataFrame
    adapters: list[str]
    scaling: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``scalars.parquet`` (tidy), ``scalar_means.parquet`` and ``scalars.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "tokens": out / "scalars.parquet",
            "means": out / "scalar_means.parquet",
            "meta": out / "scalars.json",
        }
        self.tokens.to_parquet(paths["tokens"], index=False)
        self.means.reset_index().to_parquet(paths["means"], index=False)
        meta = {
            "adapters": self.adapters,
            "scaling": self.scaling,
            "scalar": "scaling * (A x)",
            **self.meta,
        }
        atomic_write_json(paths["meta"], meta)
        return paths

    @classmethod
    def load(cls, out_dir: str | Path) -> AdapterScalars:
        out = Path(out_dir)
        meta = json.loads((out / "scalars.json").read_text())
        tokens = pd.read_parquet(out / "scalars.parquet")
        means = pd.read_parquet(out / "scalar_means.parquet").set_index("answer_id")
        return cls(tokens, means, list(meta.pop("adapters")), dict(meta.pop("scaling")), meta)


def adapter_scalars(
    lm: LanguageModel,
    answers: pd.DataFrame,
    batch_size: int = 16,
    max_tokens: int | None = None,
    progress: bool = False,
) -> AdapterScalars:
    """The scalar ``scaling * (A x)`` of every active rank-1 adapter at every answer token.

    One forward pass per batch; forward hooks on each adapter's ``lora_A`` read ``A x`` (LoRA
    dropout is off: the model runs in eval mode). The pass stops after the last adapter's layer.
    ``lm`` is a :class:`misdirection.models.LoadedModel` whose model carries the adapters.
    """
    import torch

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    model = lm.model
    adapters = find_lora_adapters(model, rank_one=True)
    encoded = encode_answers(lm, answers, max_tokens)
    labels = [a.label for a in adapters]
    scaling = {a.label: a.scaling for a in adapters}
    device = lm.device
    pad = pad_id(lm.tokenizer)

    captured: dict[str, Any] = {}
    handles = []
    for a in adapters:

        def hook(_mod: Any, _inp: Any, out: Any, label: str = a.label) -> None:
            captured[label] = out[..., 0].detach().float()

        handles.append(a.module.lora_A[a.peft_name].register_forward_hook(hook))
    if all(a.layer is not None for a in adapters):
        last = max(adapters, key=lambda a: a.layer or 0)

        def stop(_mod: Any, _inp: Any, _out: Any) -> None:
            if len(captured) == len(adapters):
                raise _StopForward

        handles.append(last.module.register_forward_hook(stop))

    cols: dict[str, list[np.ndarray]] = {
        "answer_id": [],
        "token_index": [],
        "adapter": [],
        "scalar": [],
    }
    sums: dict[str, np.ndarray] = {}
    batches = list(_batches(encoded, batch_size))
    iterator: Any = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc="adapter scalars", unit="batch")
    try:
        with _eval_mode(model), torch.no_grad():
            for batch in iterator:
                captured.clear()
                ids, mask = (t.to(device) for t in right_pad([e.ids for e in batch], pad))
                try:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _StopForward:
                    pass
                missing = [lab for lab in labels if lab not in captured]
                if missing:
                    raise ConfigError(
                        f"adapters {missing} did not run in the forward pass (disabled adapters?)"
                    )
                values = {lab: captured[lab].cpu().numpy() for lab in labels}
                for j, e in enumerate(batch):
                    n, start = e.n_answer, e.n_prompt
                    row_means = []
                    for lab in labels:
                        v = values[lab][j, start : start + n] * scaling[lab]
                        row_means.append(float(v.mean()) if n else math.nan)
                        if n:
                            cols["answer_id"].append(np.full(n, e.answer_id, dtype=object))
                            cols["token_index"].append(np.arange(n, dtype=np.int64))
                            cols["adapter"].append(np.full(n, lab, dtype=object))
                            cols["scalar"].append(v.astype(np.float32))
                    sums[e.answer_id] = np.asarray(row_means)
    finally:
        for h in handles:
            h.remove()

    layer_of = {a.label: a.layer for a in adapters}
    if cols["scalar"]:
        tokens = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    else:
        tokens = pd.DataFrame({"answer_id": [], "token_index": [], "adapter": [], "scalar": []})
    tokens.insert(3, "layer", tokens["adapter"].map(layer_of).astype("Int64"))
    tokens["token_index"] = tokens["token_index"].astype("int64")
    tokens["scalar"] = tokens["scalar"].astype("float32")
    # Keep tokens in the table's answer order (batches were length-sorted).
    order = {e.answer_id: i for i, e in enumerate(encoded)}
    adapter_order = {lab: i for i, lab in enumerate(labels)}
    tokens = (
        tokens.assign(_o=tokens["answer_id"].map(order), _a=tokens["adapter"].map(adapter_order))
        .sort_values(["_o", "_a", "token_index"], kind="stable")
        .drop(columns=["_o", "_a"])
        .reset_index(drop=True)
    )
    means = pd.DataFrame(
        [sums[e.answer_id] for e in encoded],
        index=pd.Index([e.answer_id for e in encoded], name="answer_id"),
        columns=labels,
    )
    meta = {
        "model": str(getattr(lm, "spec", "")),
        "adapter": str(getattr(lm, "adapter_spec", "") or ""),
        "layer_convention": "layer i = output of decoder block i (0-based)",
        "n_answers": len(encoded),
        "n_tokens": int(sum(e.n_answer for e in encoded)),
        "max_tokens": max_tokens,
    }
    return AdapterScalars(tokens, means, labels, scaling, meta)
