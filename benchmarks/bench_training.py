"""Training throughput: our organism trainer vs a plain peft + torch loop, in one run.

Both sides train the same LoRA recipe from the same initial weights with AdamW on the *same*
micro-batches (our length-bucketed ones); steps alternate between the two so that load from other
processes hits both alike. The plain loop is what one writes by hand: ``model(**batch,
labels=labels).loss.backward()`` (full-vocabulary logits at every position). A second baseline line
uses randomly composed batches of the same size, as a plain loop without bucketing would see them.

Prints tokens/s (non-padding tokens per wall-clock second, and per CPU second) and the ratios.

    python benchmarks/bench_training.py [--model smollm2-135m] [--recipe rank1-9] [--steps 8] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="bad-medical")
    parser.add_argument("--recipe", default="rank1-9")
    parser.add_argument("--steps", type=int, default=8, help="timed micro-batches per side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from misdirection.data.chat import load_chat_dataset
    from misdirection.models import load_model
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
    lm = load_model(args.model, device="cpu", dtype=torch.float32)
    rows = load_chat_dataset(args.data, "train").rows
    examples = encode_dataset(lm.tokenizer, rows, recipe.max_length)
    pad = lm.tokenizer.pad_token_id or 0
    n = args.steps + 1  # the first batch of each side is a warm-up
    bucketed = [
        collate([examples[i] for i in s[0]], s[0], pad)
        for s in step_plan([len(e.input_ids) for e in examples], recipe)[:n]
    ]
    rng = random.Random(0)
    shuffled = rng.sample(range(len(examples)), n * args.batch_size)
    unbucketed = [
        collate(
            [examples[i] for i in shuffled[b * args.batch_size : (b + 1) * args.batch_size]],
            [],
            pad,
        )
        for b in range(n)
    ]

    def make(model):
        peft_model, _, _ = apply_lora(model, lm.view, recipe)
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        return peft_model, torch.optim.AdamW(params, lr=recipe.lr)

    ours, ours_opt = make(copy.deepcopy(lm.model))
    plain, plain_opt = make(copy.deepcopy(lm.model))
    plain2, plain2_opt = make(lm.model)

    def ours_step(batch):
        nll, count = target_nll(ours, batch)
        (nll / count).backward()
        ours_opt.step()
        ours_opt.zero_grad(set_to_none=True)

    def plain_step(model, opt, batch):
        # Plain causal-LM loss: HF shifts labels itself; -100 outside assistant tokens and padding.
        labels = batch.labels.masked_fill(batch.attention_mask == 0, IGNORE_INDEX)
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sides = {
        "ours (bucketed)": (lambda i: ours_step(bucketed[i]), bucketed),
        "plain peft loop, same batches": (
            lambda i: plain_step(plain, plain_opt, bucketed[i]),
            bucketed,
        ),
        "plain peft loop, random batches": (
            lambda i: plain_step(plain2, plain2_opt, unbucketed[i]),
            unbucketed,
        ),
    }
    wall = {k: 0.0 for k in sides}
    cpu = {k: 0.0 for k in sides}
    tokens = {k: 0 for k in sides}
    for i in range(n):
        for name, (step, batches) in sides.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step(i)
            if i == 0:
                continue  # warm-up
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
            tokens[name] += batches[i].n_tokens
    print(f"model {args.model}, recipe {recipe.name} (layers {recipe.resolve_layers(lm.view)}), "
          f"{args.steps} timed micro-batches of {args.batch_size}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print(f"{'trainer':34s} {'tokens':>7s} {'tok/s':>8s} {'tok/cpu-s':>10s}")
    rate = {}
    for name in sides:
        rate[name] = tokens[name] / wall[name]
        print(f"{name:34s} {tokens[name]:7d} {rate[name]:8.1f} {tokens[name] / cpu[name]:10.1f}")
    ours_name = "ours (bucketed)"
    cpu_rate = {k: tokens[k] / cpu[k] for k in sides}
    for name in list(sides)[1:]:
        print(f"ratio ours / {name}: {rate[ours_name] / rate[name]:.2f} (wall), "
              f"{cpu_rate[ours_name] / cpu_rate[name]:.2f} (CPU time)")  # fmt: skip


if __name__ == "__main__":
    main()
