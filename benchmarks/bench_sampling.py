"""Sampling throughput: our continuous-batching decoder vs plain ``transformers`` ``generate``.

Measured in one run on the same prompts (the built-in ``core`` questions, every paraphrase, repeated
to ``--answers`` answers), at temperature 1 with no top-k / top-p, so both do the same work per token:

1. ours at batch 32 vs ``model.generate`` in batches of 32 (target: >= 1.5x answer tokens/s), at
   each ``--max-new-tokens`` (default: 600, the answer budget of the EM papers' evaluations, and
   128, a short budget);
2. ours at batch 1 vs ours at batch 32;
3. with several ``--dtypes`` (default float32,bfloat16), each method in each dtype: ours in bf16
   against ours in fp32 (target on a CPU with bf16 units: >= 1.8x) and against ``generate`` in
   fp32; with several ``--batch-size`` values, ours at each against the first.

Every variant runs twice per budget, in one order and then the reverse, so that a shared machine's
changing load hits all alike. bf16's agreement with fp32 (next-token distributions, greedy tokens)
is tested in ``tests/test_dtype.py``.

Where the gain comes from: ``generate`` keeps decoding every row of a batch until its longest answer
ends, and grows its key/value cache by concatenation (a copy of every layer's cache at every step).
Ours drops finished rows, refills their slots, and writes keys and values in place. On a CPU a
decoding step costs roughly in proportion to its rows, so the gain is about the share of row-steps
``generate`` spends on finished answers (printed) plus the cache copies; both grow with the budget.

Throughput is answer tokens per second (end-of-turn tokens and padding not counted). Answers are
random, so the two methods produce different lengths; tokens/s normalises for that.

    python benchmarks/bench_sampling.py                       # CPU, embedded model (~40 min)
    python benchmarks/bench_sampling.py --max-new-tokens 128  # the short budget only (~8 min)
    python benchmarks/bench_sampling.py --max-new-tokens 128 --batch-size 32,64 --threads 2
    python benchmarks/bench_sampling.py --model random-7b --device cuda --answers 256 --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _setup import add_model_args, load_models, synchronizer


def _budgets(text: str) -> list[int]:
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected positive integers like 600,128, got {text!r}"
        ) from None
    if not budgets or min(budgets) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 600,128, got {text!r}")
    return budgets


def core_prompts(lm, n: int) -> tuple[list, list[dict]]:
    """The first ``n`` requests over every ``core`` paraphrase (repeated as needed), and one
    question dict per request, so that a sampler given them draws exactly those answers."""
    from misdirection.data.questions import load_questions
    from misdirection.sample import build_requests

    core = list(load_questions("core"))
    reps = -(-n // sum(len(q.paraphrases) for q in core))
    questions = [{"id": q.id, "paraphrases": list(q.paraphrases), "system": q.system} for q in core]
    requests = build_requests(lm, questions, reps)[:n]
    chosen = [
        {"id": r.answer_id.replace("/", "_"), "paraphrases": [r.question], "system": r.system}
        for r in requests
    ]
    return requests, chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--answers", type=int, default=32, help="answers per method at batch 32")
    parser.add_argument(
        "--batch1-answers",
        type=int,
        default=2,
        help="answers for the batch-1 run (slow; first dtype only; 0 skips it)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=_budgets,
        default=_budgets("600,128"),
        help="comma-separated answer budgets; each gets its own generate-vs-ours comparison",
    )
    parser.add_argument(
        "--batch-size",
        type=_budgets,
        default=_budgets("32"),
        help="comma-separated batch sizes for ours (generate uses the first), e.g. 32,64",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each budget's figures appear as soon as measured

    import torch

    from misdirection.sample import sample_answers, stop_token_ids

    if args.threads:
        torch.set_num_threads(args.threads)
    models = load_models(args.model, args.device, args.dtypes)
    dtypes = list(models)
    lm0 = models[dtypes[0]]
    requests, chosen = core_prompts(lm0, args.answers)
    stops = sorted(stop_token_ids(lm0))
    device = lm0.device
    sync = synchronizer(device)
    batch_sizes = args.batch_size
    bs = batch_sizes[0]

    def ours(lm, items: list[dict], batch_size: int, budget: int) -> tuple[int, float, float]:
        """(answer tokens, wall seconds, process CPU seconds)."""
        sync()
        cpu_start, start = time.process_time(), time.perf_counter()
        df = sample_answers(lm, items, 1, budget, args.seed, batch_size=batch_size, progress=False)
        sync()
        return (
            int(df["answer_tokens"].sum()),
            time.perf_counter() - start,
            time.process_time() - cpu_start,
        )

    row_steps: dict[str, int] = {}  # rows x decoding steps that generate computed

    def plain_generate(lm, reqs: list, batch_size: int, budget: int) -> tuple[int, float, float]:
        pad = lm.tokenizer.pad_token_id
        tokens = steps = 0
        torch.manual_seed(args.seed)
        sync()
        cpu_start, start = time.process_time(), time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(reqs), batch_size):
                chunk = [list(r.prompt_ids) for r in reqs[i : i + batch_size]]
                width = max(map(len, chunk))
                ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk], device=device)
                mask = torch.tensor(
                    [[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device
                )
                out = lm.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=budget,
                    eos_token_id=stops,
                    pad_token_id=pad,
                )[:, width:]
                steps += out.shape[0] * out.shape[1]
                for row in out.tolist():
                    ends = [j for j, t in enumerate(row) if t in stops]
                    tokens += ends[0] if ends else len(row)
        sync()
        key = str(next(lm.model.parameters()).dtype)
        row_steps[key] = row_steps.get(key, 0) + steps
        return tokens, time.perf_counter() - start, time.process_time() - cpu_start

    def report(budget: int) -> None:
        # Every variant once, in one order and then its reverse (ABBA) within this budget, so that
        # a drift in a shared machine's load hits every variant alike.
        variants = [(f"generate b{bs}", d) for d in dtypes] + [
            (f"ours b{b}", d) for b in batch_sizes for d in dtypes
        ]
        results: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
        row_steps.clear()
        for variant in variants + variants[::-1]:
            method, d = variant
            lm = models[d]
            if method.startswith("generate"):
                got = plain_generate(lm, requests, bs, budget)
            else:
                got = ours(lm, chosen, int(method.removeprefix("ours b")), budget)
            results.setdefault(variant, []).append(got)

        def rate(variant: tuple[str, str], clock: int = 1) -> float:
            runs = results[variant]
            return sum(r[0] for r in runs) / sum(r[clock] for r in runs)

        print(f"\n--- max_new_tokens {budget} (load average {os.getloadavg()[0]:.1f})")
        for variant in variants:
            runs = results[variant]
            tokens, wall = sum(r[0] for r in runs), sum(r[1] for r in runs)
            name = f"{variant[0]} {variant[1]}"
            print(
                f"{name:24s}: {tokens:6d} tokens in {wall:7.1f} s = {rate(variant):8.1f} tokens/s"
            )
        for d in dtypes:
            hf_tokens = sum(r[0] for r in results[(f"generate b{bs}", d)])
            steps = row_steps[f"torch.{d}"]
            print(
                f"  {d}: generate spent {1 - hf_tokens / max(steps, 1):.0%} of its row-steps on "
                f"answers that had already ended; ours / generate at batch {bs}: "
                f"{rate((f'ours b{bs}', d)) / rate((f'generate b{bs}', d)):.2f}x (target >= 1.5x)"
            )
        d0 = dtypes[0]
        for d in dtypes[1:]:
            wall = rate((f"ours b{bs}", d)) / rate((f"ours b{bs}", d0))
            line = f"ratio ours {d} / ours {d0} at batch {bs}: {wall:.2f}x (wall)"
            if device.type == "cpu":
                cpu = rate((f"ours b{bs}", d), 2) / rate((f"ours b{bs}", d0), 2)
                line += f", {cpu:.2f}x (CPU time)"
            print(line + (" (target >= 1.8x)" if d == "bfloat16" else ""))
            vs_hf = rate((f"ours b{bs}", d)) / rate((f"generate b{bs}", d0))
            print(f"ratio ours {d} / generate {d0} at batch {bs}: {vs_hf:.2f}x (wall)")
        for b in batch_sizes[1:]:
            for d in dtypes:
                ratio = rate((f"ours b{b}", d)) / rate((f"ours b{bs}", d))
                print(f"ratio ours batch {b} / batch {bs}, {d}: {ratio:.2f}x (wall)")
        if args.batch1_answers:
            lm = models[d0]
            b1_tokens, b1_s, _ = ours(lm, chosen[: args.batch1_answers], 1, budget)
            b1_rate = b1_tokens / b1_s
            print(
                f"ours batch 1 {d0}: {b1_tokens} tokens in {b1_s:.1f} s = {b1_rate:.1f} tokens/s; "
                f"ours batch {bs} / batch 1: {rate((f'ours b{bs}', d0)) / b1_rate:.2f}x"
            )

    # Warm-up (first-call allocations, lazy imports, oneDNN kernels) for every path and dtype.
    for lm in models.values():
        ours(lm, chosen[:2], 2, 8)
        plain_generate(lm, requests[:2], 2, 8)
    print(
        f"model {args.model} on {device} ({torch.get_num_threads()} threads), dtypes "
        f"{', '.join(dtypes)}, {len(requests)} answers, T=1; each variant runs twice (ABBA)"
    )
    for budget in args.max_new_tokens:
        report(budget)


if __name__ == "__main__":
    main()
