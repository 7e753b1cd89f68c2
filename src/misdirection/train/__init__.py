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

The package: :mod:`.recipes` (recipes and applying them), :mod:`.encoding` (tokenisation with the
loss mask, batching), :mod:`.loss` (the loss and the held-out log-likelihood), :mod:`.checkpoints`
and :mod:`.trainer` (the loop and the run card).
"""

from misdirection.train.checkpoints import CHECKPOINTS
from misdirection.train.encoding import (
    IGNORE_INDEX,
    Batch,
    Example,
    assistant_spans,
    collate,
    encode_conversation,
    encode_dataset,
    epoch_batches,
    step_plan,
)
from misdirection.train.loss import heldout_loglik, target_nll
from misdirection.train.recipes import (
    RECIPES,
    Recipe,
    apply_lora,
    get_recipe,
    target_module_names,
)
from misdirection.train.summary import CurvePoint, TrainingRun
from misdirection.train.trainer import (
    RUN_CARD,
    AdapterSnapshots,
    TrainResult,
    TrainStep,
    default_threads,
    train_organism,
)

__all__ = [
    "AdapterSnapshots",
    "CHECKPOINTS",
    "IGNORE_INDEX",
    "RECIPES",
    "RUN_CARD",
    "Batch",
    "Example",
    "Recipe",
    "TrainResult",
    "TrainStep",
    "CurvePoint",
    "TrainingRun",
    "apply_lora",
    "assistant_spans",
    "collate",
    "default_threads",
    "encode_conversation",
    "encode_dataset",
    "epoch_batches",
    "get_recipe",
    "heldout_loglik",
    "step_plan",
    "target_module_names",
    "target_nll",
    "train_organism",
]
