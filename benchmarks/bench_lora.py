"""Adapter-scalar capture throughput against a plain forward pass on the same batches.

Builds the embedded model with nine rank-1 down-projection adapters at the rank1-9 layers
(random weights: the cost does not depend on them), then times, on the same answers and batches,

* ours: :func:`misdirection.lora.adapter_scalars` (hooks on every lora_A, early stop after the last
  adapted layer, tidy table built);
* baseline: a plain ``model(input_ids, attention_mask)`` forward pass with full logits.

Prints tokens/s of both and the ratio ours / baseline (>= 1 means capture is free).

    python benchmarks/bench_lora.py [--answers 64] [--tokens 128] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128, help="approximate answer length")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from peft import LoraConfig, get_peft_model

    from misdirection.lora import adapter_scalars, encode_answers
    from misdirection.lora.encoding import _batches, _pad_id, _right_padded
    from misdirection.models import ModelView, load_model
    from misdirection.train import get_recipe, target_module_names

    lm = load_model("smollm2-135m", device="cpu")
    layers, targets = target_module_names(lm.view, get_recipe("rank1-9"))
    lm.model = get_peft_model(lm.model, LoraConfig(r=1, lora_alpha=16, target_modules=targets))
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    lm.model.eval()
    lm.view = ModelView.of(lm.model)

    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while"]
    rows = [
        {
            "answer_id": f"q/0/{i}",
            "question": f"Question {i % 8}: what do you think about this?",
            "answer": " ".join(words[(i + k) % len(words)] for k in range(args.tokens - (i % 16))),
        }
        for i in range(args.answers)
    ]
    table = pd.DataFrame(rows)
    encoded = encode_answers(lm, table)
    n_tokens = sum(len(e.ids) for e in encoded)
    batches = [_right_padded(b, _pad_id(lm), lm.device) for b in _batches(encoded, args.batch)]

    def plain() -> None:
        with torch.no_grad():
            for ids, mask in batches:
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    def ours() -> None:
        adapter_scalars(lm, table, batch_size=args.batch)

    plain(), ours()  # warm-up
    t_plain, t_ours = [], []
    for _ in range(args.repeats):  # interleaved so machine load hits both alike
        s = time.perf_counter()
        plain()
        t_plain.append(time.perf_counter() - s)
        s = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - s)
    bp, bo = min(t_plain), min(t_ours)
    print(
        f"adapters at layers {layers}; {args.answers} answers, {n_tokens} tokens, "
        f"batch {args.batch}"
    )
    print(f"plain forward:     {n_tokens / bp:9.0f} tokens/s  ({bp:.2f} s, best of {args.repeats})")
    print(f"adapter scalars:   {n_tokens / bo:9.0f} tokens/s  ({bo:.2f} s, best of {args.repeats})")
    print(f"ratio ours/plain:  {bp / bo:.2f}x")


if __name__ == "__main__":
    main()
