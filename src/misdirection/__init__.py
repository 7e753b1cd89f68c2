"""misdirection: a toolkit for emergent-misalignment research.

The workflow, one module each: ``models`` (load base + adapters) -> ``data`` (chat datasets,
question sets) -> ``train`` (LoRA organisms) -> ``sample`` (batched generation) -> ``judge``
(rubrics and backends) -> ``metrics`` (EM shares with intervals) -> ``activations`` (capture) ->
``directions`` (mean-diff and contrastive) -> ``interventions`` (steer, ablate, controls) ->
``lora`` (rank-1 interpretation) -> ``geometry`` (comparing directions) -> ``study``/``report``.
"""

__version__ = "0.1.0"
