"""Sampling throughput: our continuous-batching decoder vs plain ``transformers`` ``generate``.

Measured in one run on the same prompts (the built-in ``core`` questions, every paraphrase, repeated
to ``--answers`` answers), at temperature 1 with no top-k / top-p, so both do the same work per token:

1. ours at batch 32 vs ``model.generate`` in batches of 32 (target: >= 1.5x answer tokens/s), at
   each ``--max-new-tokens`` (default: 600, the answer budget of the EM papers' evaluations, and
   128, a short budget);
2. ours at batch 1 vs ours at batch 32.

Where the gain comes from: ``generate`` keeps decoding every row of a batch until its longest answer
ends, and grows its key/value cache by concatenation (a copy of every layer's cache at every step).
Ours drops finished rows, refills their slots, and writes keys and values in place. On a CPU a
decoding step costs roughly in proportion to its rows, so the gain is about the share of row-steps
``generate`` spends on finished answers (printed) plus the cache copies; both grow with the budget.

Throughput is answer tokens per second (end-of-turn tokens and padding not counted). Answers are
random, so the two methods produce different lengths; tokens/s normalises for that.

    python benchmarks/bench_sampling.py                       # CPU, embedded model (~10 min)
    python benchmarks/bench_sampling.py --max-new-tokens 128  # the short budget only (~2 min)
    python benchmarks/bench_sampling.py --device cuda --answers 256
"""

from __future__ import annotations

import argparse
import sys
import time


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
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--answers", type=int, default=32, help="answers per method at batch 32")
    parser.add_argument(
        "--batch1-answers", type=int, default=2, help="answers for the batch-1 run (slow)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=_budgets,
        default=_budgets("600,128"),
        help="comma-separated answer budgets; each gets its own generate-vs-ours comparison",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each budget's figures appear as soon as measured

    import torch

    from misdirection.models import load_model
    from misdirection.sample import sample_answers, stop_token_ids

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(args.model, device=args.device)
    requests, chosen = core_prompts(lm, args.answers)
    stops = sorted(stop_token_ids(lm))
    device = lm.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    cpu: dict[str, float] = {}

    def ours(items: list[dict], batch_size: int, budget: int) -> tuple[int, float]:
        sync()
        cpu_start = time.process_time()
        start = time.perf_counter()
        df = sample_answers(lm, items, 1, budget, args.seed, batch_size=batch_size, progress=False)
        sync()
        cpu[f"ours{batch_size}"] = time.process_time() - cpu_start
        return int(df["answer_tokens"].sum()), time.perf_counter() - start

    row_steps = 0  # rows x decoding steps that generate computed

    def plain_generate(reqs: list, batch_size: int, budget: int) -> tuple[int, float]:
        nonlocal row_steps
        pad = lm.tokenizer.pad_token_id
        tokens = 0
        row_steps = 0
        torch.manual_seed(args.seed)
        sync()
        cpu_start = time.process_time()
        start = time.perf_counter()
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
                row_steps += out.shape[0] * out.shape[1]
                for row in out.tolist():
                    ends = [j for j, t in enumerate(row) if t in stops]
                    tokens += ends[0] if ends else len(row)
        sync()
        cpu["generate"] = time.process_time() - cpu_start
        return tokens, time.perf_counter() - start

    def report(budget: int) -> None:
        hf_tokens, hf_s = plain_generate(requests, args.batch_size, budget)
        hf_cpu = cpu["generate"]
        our_tokens, our_s = ours(chosen, args.batch_size, budget)
        our_cpu = cpu[f"ours{args.batch_size}"]
        b1_tokens, b1_s = ours(chosen[: args.batch1_answers], 1, budget)

        hf_rate, our_rate, b1_rate = hf_tokens / hf_s, our_tokens / our_s, b1_tokens / b1_s
        print(f"\n--- max_new_tokens {budget}")
        print(
            f"transformers generate, batch {args.batch_size}: {hf_tokens:6d} tokens in {hf_s:7.1f} s = {hf_rate:8.1f} tokens/s"
        )
        print(
            f"misdirection sample,   batch {args.batch_size}: {our_tokens:6d} tokens in {our_s:7.1f} s = {our_rate:8.1f} tokens/s"
        )
        print(
            f"  generate spent {1 - hf_tokens / max(row_steps, 1):.0%} of its row-steps on answers "
            f"that had already ended ({hf_tokens} answer tokens in {row_steps} row-steps)"
        )
        print(
            f"ratio ours / generate at batch {args.batch_size}: {our_rate / hf_rate:.2f}x (target >= 1.5x)"
        )
        print(
            f"misdirection sample,   batch 1:  {b1_tokens:6d} tokens in {b1_s:7.1f} s = {b1_rate:8.1f} tokens/s "
            f"({len(chosen[: args.batch1_answers])} answers)"
        )
        print(f"ratio ours batch {args.batch_size} / ours batch 1: {our_rate / b1_rate:.2f}x")
        # On a shared CPU, wall-clock rates depend on the neighbours' load; process CPU time does less so
        # (on GPU it measures only the host side: trust the wall-clock ratio there).
        if device.type == "cpu":
            print(
                f"by process CPU time: generate {hf_tokens / hf_cpu:.1f}, ours {our_tokens / our_cpu:.1f} "
                f"tokens/CPU-s = {(our_tokens / our_cpu) / (hf_tokens / hf_cpu):.2f}x; "
                f"ours batch 1 {b1_tokens / cpu['ours1']:.1f} tokens/CPU-s"
            )

    # Warm-up (first-call allocations, lazy imports) for both paths.
    ours(chosen[:2], 2, 8)
    plain_generate(requests[:2], 2, 8)
    budgets = args.max_new_tokens
    print(
        f"model {args.model} on {device} ({torch.get_num_threads()} threads), {len(requests)} answers, T=1"
    )
    for budget in budgets:
        report(budget)


if __name__ == "__main__":
    main()
