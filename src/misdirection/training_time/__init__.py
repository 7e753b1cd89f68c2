"""Training-time questions about a misalignment direction.

* :mod:`.defence` — fine-tuning with a direction ablated or counter-steered during training only
  (concept-ablation fine-tuning, preventative steering), its random controls, and what a defence
  cost the narrow task;
* :mod:`.monitor` — the direction's projection across checkpoints, read on a fixed probe set and on
  the training batches, beside EM at chosen checkpoints;
* :mod:`.screening` — which training rows push along the direction (projection difference against
  the base model's own answer to the same prompt).

Every intervention is the package's own (:class:`misdirection.interventions.Ablate` / ``Steer``,
random controls from :mod:`misdirection.controls`); the trainer takes them through
``train_organism(interventions=..., on_step=...)``.
"""
