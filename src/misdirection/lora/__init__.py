"""Reading rank-1 LoRA organisms: adapter scalars, probes, adapter steering, B vectors, dynamics.

A rank-1 LoRA adapter on a linear layer ``W`` (here usually an MLP down-projection) computes

    y = W x + s * B (A x)          with A: [1, d_in], B: [d_out, 1], s = peft's ``scaling``

(``s = alpha / r`` for plain LoRA, ``alpha / sqrt(r)`` with rsLoRA; for ``r = 1`` both are
``alpha``). So each adapter writes one fixed direction ``b = B[:, 0]`` into the residual stream,
scaled by one number per token. **The scalar we report is ``s * (A x)``**, the exact coefficient of
``b`` in the layer's output, so ``scalar * b`` is the adapter's whole contribution at that token.
Dividing by the ``scaling`` recorded in :class:`AdapterScalars` gives the raw ``A x`` (the probes
standardise their inputs, so the choice changes nothing there).

Names: an adapter is labelled ``L{layer}.{module}`` (e.g. ``L15.down_proj``) with the project's
layer convention (layer i = decoder block i, 0-based); when several PEFT adapters are loaded at
once the PEFT adapter name is appended (``L15.down_proj@adapter1``).

Modules: :mod:`~misdirection.lora.adapters` (finding adapters), :mod:`~misdirection.lora.encoding`
(answers -> token batches), :mod:`~misdirection.lora.scalars`, :mod:`~misdirection.lora.probes`
(+ the general / domain-specific rule), :mod:`~misdirection.lora.scaling` (adapter scaling, an
intervention), :mod:`~misdirection.lora.bvectors` (B vectors against directions: cosines, B
ablation, downstream convergence), :mod:`~misdirection.lora.dynamics` (training dynamics from
checkpoints), :mod:`~misdirection.lora.plots`. Every public name is re-exported here.
"""

from __future__ import annotations

from misdirection.lora.adapters import LoraAdapter, NoRankOneAdapterError, find_lora_adapters
from misdirection.lora.bvectors import (
    BVectorAblation,
    Convergence,
    b_direction_cosines,
    downstream_convergence,
)
from misdirection.lora.dynamics import Dynamics, find_checkpoints, training_dynamics
from misdirection.lora.encoding import answer_ids_of, encode_answers
from misdirection.lora.plots import plot_convergence, plot_dynamics, plot_probe_coefficients
from misdirection.lora.probes import (
    AdapterProbe,
    ClassificationRule,
    ProbeReport,
    ProbeResult,
    ProbeThresholds,
    check_scores,
    classify_adapters,
    probe_adapters,
    probe_datasets,
)
from misdirection.lora.reading import AdapterRole, BCosine, LoraReading, ProbeSummary
from misdirection.lora.scalars import AdapterScalars, adapter_scalars
from misdirection.lora.scaling import (
    AdapterScaling,
    parse_adapter_scales,
    resolve_adapter_selection,
)

__all__ = [
    # adapters
    "NoRankOneAdapterError",
    "LoraAdapter",
    "find_lora_adapters",
    # encoding
    "answer_ids_of",
    "encode_answers",
    # scalars
    "AdapterScalars",
    "adapter_scalars",
    # probes
    "ProbeThresholds",
    "ProbeResult",
    "AdapterProbe",
    "check_scores",
    "probe_datasets",
    "ClassificationRule",
    "classify_adapters",
    "ProbeReport",
    "probe_adapters",
    # reading (what a study reports)
    "AdapterRole",
    "BCosine",
    "LoraReading",
    "ProbeSummary",
    # scaling
    "parse_adapter_scales",
    "resolve_adapter_selection",
    "AdapterScaling",
    # bvectors
    "b_direction_cosines",
    "BVectorAblation",
    "Convergence",
    "downstream_convergence",
    # dynamics
    "Dynamics",
    "find_checkpoints",
    "training_dynamics",
    # plots
    "plot_convergence",
    "plot_dynamics",
    "plot_probe_coefficients",
]
