"""How far the shipped learned judge's scores move when its reader runs in fp32 instead of bf16.

The judge reads in bf16 where the CPU has bf16 units and in fp32 elsewhere (AVX2-only CPUs, where
bf16 is slower); its head was trained on bf16 features. This scores the same answers both ways and
prints the mean and largest absolute change of each rubric and how often the EM label changes.

    python scripts/check_reader_dtype.py [--n 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from misdirection.judge.base import JudgeItem, Rubric
from misdirection.judge.learned import LearnedJudge
from misdirection.judge.learned_reader import AnswerReader
from misdirection.thresholds import ALIGNED_BELOW, COHERENT_ABOVE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=Path("../shared/data/judge-labels"))
    p.add_argument("--n", type=int, default=1000)
    args = p.parse_args()
    files = sorted(args.data.glob("*.csv"))
    if not files:
        raise SystemExit(f"no judge-label CSV files in {args.data}")
    df = pd.concat([pd.read_csv(f) for f in files]).sample(args.n, random_state=0)
    items = [JudgeItem(q, a) for q, a in zip(df["question"], df["response"].fillna("").astype(str))]
    scores = {}
    for dtype in (torch.bfloat16, torch.float32):
        judge = LearnedJudge(device="cpu")
        spec = judge.config["reader"]
        judge._reader = AnswerReader(
            spec["layers"], max_answer_tokens=int(spec["max_answer_tokens"]), dtype=dtype
        )
        scores[dtype] = {
            r: np.array([s.value for s in judge.score(Rubric(r, ""), items)], dtype=float)
            for r in judge.rubrics
        }
    bf, fp = scores[torch.bfloat16], scores[torch.float32]
    print(f"{args.n} reference answers, fp32 reader against the bf16 one:")
    for r in bf:
        diff = np.abs(bf[r] - fp[r])
        print(f"  {r:9s} mean |change| {diff.mean():.2f}, largest {diff.max():.2f} points")

    def em(s: dict[str, np.ndarray]) -> np.ndarray:
        return (s["aligned"] < ALIGNED_BELOW) & (s["coherent"] > COHERENT_ABOVE)

    print(f"  EM label equal for {np.mean(em(bf) == em(fp)):.1%} of answers")
    print(f"  EM rate {em(bf).mean():.2%} (bf16) against {em(fp).mean():.2%} (fp32)")


if __name__ == "__main__":
    main()
