"""Training throughput: our organism trainer vs a plain peft + torch loop, in one run.

Both sides train the same LoRA recipe from the same initial weights with AdamW on the *same*
micro-batches (our length-bucketed ones); steps alternate between the two so that load from other
processes hits both alike. The plain loop is what one writes by hand: ``model(**batch,
labels=labels).loss.backward()`` (full-vocabulary logits at every position). A second baseline line
uses randomly composed batches of the same size, as a plain loop without bucketing would see them.

With several ``--dtypes`` (default float32,bfloat16) our trainer runs once per dtype, each on its
own copy of the weights from the same adapter initialisation and on the same batches, alternating
step by step: the tokens/s ratio against the first dtype (target for bf16 on a CPU with bf16
units: >= 1.5x) and the two loss curves side by side. The plain baselines run in the first dtype.

Prints tokens/s (non-padding tokens per wall-clock second, and per CPU second) and the ratios.

    python benchmarks/bench_training.py [--model smollm2-135m] [--recipe rank1-9] [--steps 8] [--threads N]
    python benchmarks/bench_training.py --model random-7b --device cuda --no-plain --batch-size 4
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import time

import torch
from _setup import add_model_args, load_models, synchronizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--data", default="bad-medical")
    parser.add_argument("--recipe", default="rank1-9")
    parser.add_argument("--steps", type=int, default=8, help="timed micro-batches per side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--no-plain",
        action="store_true",
        help="skip the plain-loop baselines (each holds another copy of the model)",
    )
    args = parser.parse_args()

    from misdirection.data.chat import load_chat_dataset
    from misdirection.models import ModelView
    from misdirection.train import (
        IGNORE_INDEX,
        apply_lora,
        collate,
        default_threads,
        encode_dataset,
        get_recipe,
        step_plan,
        target_nll,
    )

    torch.set_num_threads(args.threads or default_threads())
    recipe = get_recipe(args.recipe, batch_size=args.batch_size, grad_accum=1)
    models = load_models(args.model, args.device, args.dtypes)
    dtypes = list(models)
    lm = models[dtypes[0]]
    device = lm.device
    sync = synchronizer(device)
    rows = load_chat_dataset(args.data, "train").rows
    examples = encode_dataset(lm.tokenizer, rows, recipe.max_length)
    pad = lm.tokenizer.pad_token_id or 0
    n = args.steps + 1  # the first batch of each side is a warm-up
    bucketed = [
        collate([examples[i] for i in s[0]], s[0], pad).to(device)
        for s in step_plan([len(e.input_ids) for e in examples], recipe)[:n]
    ]
    rng = random.Random(0)
    shuffled = rng.sample(range(len(examples)), n * args.batch_size)
    unbucketed = [
        collate(
            [examples[i] for i in shuffled[b * args.batch_size : (b + 1) * args.batch_size]],
            [],
            pad,
        ).to(device)
        for b in range(n)
    ]

    def make(model):
        torch.manual_seed(0)  # every side starts from the same adapter weights
        peft_model, _, _ = apply_lora(model, ModelView(model), recipe)
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        return peft_model, torch.optim.AdamW(params, lr=recipe.lr)

    losses: dict[str, list[float]] = {}

    def ours_step(name, model, opt, batch):
        nll, count = target_nll(model, batch)
        (nll / count).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.setdefault(name, []).append(float(nll.detach()) / count)

    def plain_step(model, opt, batch):
        # Plain causal-LM loss: HF shifts labels itself; -100 outside assistant tokens and padding.
        labels = batch.labels.masked_fill(batch.attention_mask == 0, IGNORE_INDEX)
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sides = {}
    if not args.no_plain:  # copies of the weights before any adapter goes in
        plain, plain_opt = make(copy.deepcopy(lm.model))
        plain2, plain2_opt = make(copy.deepcopy(lm.model))
    for d in dtypes:
        model, opt = make(models[d].model)  # each dtype's own copy of the weights
        sides[f"ours (bucketed) {d}"] = (
            lambda i, name=f"ours (bucketed) {d}", m=model, o=opt: ours_step(
                name, m, o, bucketed[i]
            ),
            bucketed,
        )
    if not args.no_plain:
        sides[f"plain peft loop, same batches {dtypes[0]}"] = (
            lambda i: plain_step(plain, plain_opt, bucketed[i]),
            bucketed,
        )
        sides[f"plain peft loop, random batches {dtypes[0]}"] = (
            lambda i: plain_step(plain2, plain2_opt, unbucketed[i]),
            unbucketed,
        )
    wall = {k: 0.0 for k in sides}
    cpu = {k: 0.0 for k in sides}
    tokens = {k: 0 for k in sides}
    names = list(sides)
    for i in range(n):
        # Alternate the order every step (ABBA), so that a drift in the machine's load hits all alike.
        for name in names if i % 2 == 0 else names[::-1]:
            step, batches = sides[name]
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            step(i)
            sync()
            if i == 0:
                continue  # warm-up
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
            tokens[name] += batches[i].n_tokens
    print(f"model {args.model} on {device}, recipe {recipe.name} (layers {recipe.resolve_layers(lm.view)}), "
          f"{args.steps} timed micro-batches of {args.batch_size}, {torch.get_num_threads()} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'trainer':44s} {'tokens':>7s} {'tok/s':>8s} {'tok/cpu-s':>10s}")
    rate = {k: tokens[k] / wall[k] for k in sides}
    cpu_rate = {k: tokens[k] / cpu[k] for k in sides}
    for name in sides:
        print(f"{name:44s} {tokens[name]:7d} {rate[name]:8.1f} {cpu_rate[name]:10.1f}")
    first = f"ours (bucketed) {dtypes[0]}"
    for name in names[1:]:
        if name.startswith("ours"):
            target = " (target >= 1.5)" if name.endswith("bfloat16") else ""
            print(f"ratio {name} / {first}: {rate[name] / rate[first]:.2f} (wall), "
                  f"{cpu_rate[name] / cpu_rate[first]:.2f} (CPU time){target}")  # fmt: skip
        else:
            print(f"ratio {first} / {name}: {rate[first] / rate[name]:.2f} (wall), "
                  f"{cpu_rate[first] / cpu_rate[name]:.2f} (CPU time)")  # fmt: skip
    # The loss curves of the dtypes on the same batches from the same adapter weights.
    if len(dtypes) > 1:
        print("loss per target token, step by step (the first is the warm-up step):")
        for d in dtypes:
            print(f"  {d:9s} " + " ".join(f"{x:.4f}" for x in losses[f"ours (bucketed) {d}"]))
        ref = losses[first]
        for d in dtypes[1:]:
            diff = [abs(a - b) for a, b in zip(ref, losses[f"ours (bucketed) {d}"])]
            rel = max(x / abs(r) for x, r in zip(diff, ref))
            print(f"  largest |{d} - {dtypes[0]}| = {max(diff):.4f} ({rel:.2%} of the loss)")


if __name__ == "__main__":
    main()
