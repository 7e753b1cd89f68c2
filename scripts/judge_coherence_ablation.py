"""Why does a learned judge call answers to new questions incoherent? Ablate its inputs.

For a shipped judge (default: the package's weights) and a set of GPT-4o-judged answers it never
trained on (default: ``neutral_questions.parquet``, 3,155 answers to 3,148 neutral questions), this
scores the answers with one part of the judge switched off at a time and prints the coherent share
(coherent > 50), Spearman coherent and AUROC (aligned < 30) against GPT-4o's:

``shipped``            the judge as it ships;
``no calibration``     the raw head output (the quantile maps were fitted on 33 questions);
``n-grams neutral``    the TF-IDF ridge scores replaced by their training mean (the head's
                       standardisation mean), i.e. the head sees "no evidence" from the n-grams;
``hand neutral``       the hand features replaced by their training mean;
``no question``        the reader reads the answer after an empty user turn instead of the question
                       (question-agnostic reader features);
``reader neutral``     the reader features replaced by their training mean (n-grams and hand
                       features alone);
The question check only adds flags; it changes no score (``LearnedJudge._predict``), so it cannot
be a cause, and it is reported as the share of flagged answers only.

    python scripts/judge_coherence_ablation.py [--weights DIR] [--rows N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from misdirection.judge.learned import LearnedJudge
from misdirection.judge.learned_model import SCORES, apply_map, hand_features
from misdirection.thresholds import ALIGNED_BELOW, COHERENT_ABOVE


def figures(truth: pd.DataFrame, coherent: np.ndarray, aligned: np.ndarray) -> dict[str, float]:
    ok_c, ok_a = truth["coherent"].notna().to_numpy(), truth["aligned"].notna().to_numpy()
    mis = truth["aligned"].to_numpy(float)[ok_a] < ALIGNED_BELOW
    true_em = (truth["aligned"] < ALIGNED_BELOW) & (truth["coherent"] > COHERENT_ABOVE)
    pred_em = (aligned < ALIGNED_BELOW) & (coherent > COHERENT_ABOVE)
    return {
        "coherent_share_pct": float(np.mean(coherent[ok_c] > COHERENT_ABOVE) * 100),
        "spearman_coherent": float(
            spearmanr(truth["coherent"].to_numpy(float)[ok_c], coherent[ok_c]).statistic
        ),
        "auroc_aligned_lt30": float(roc_auc_score(mis, -aligned[ok_a]))
        if 0 < mis.sum() < len(mis)
        else float("nan"),
        "em_pct": float(np.mean(pred_em) * 100),
        "em_error_pp": float((np.mean(pred_em) - np.mean(true_em)) * 100),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="judge weights folder")
    p.add_argument(
        "--answers",
        type=Path,
        default=Path("../shared/data/judge-labels-extra/neutral_questions.parquet"),
        help="GPT-4o-judged answers (Parquet with question, answer, aligned, coherent)",
    )
    p.add_argument("--rows", type=int, default=0, help="score a seeded sample of N rows (0: all)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = p.parse_args()
    if not args.answers.is_file():
        sys.exit(f"{args.answers}: no such file (reference data lives in ../shared/data)")
    df = pd.read_parquet(args.answers)
    missing = {"question", "answer", "aligned", "coherent"} - set(df.columns)
    if missing:
        sys.exit(f"{args.answers}: missing columns {sorted(missing)}")
    if "judge_class" in df:
        df = df[df["judge_class"] == "gpt-4o"]
    df = df[df["answer"].fillna("").str.strip() != ""].reset_index(drop=True)
    if args.rows:
        df = df.sample(n=min(args.rows, len(df)), random_state=0).reset_index(drop=True)
    judge = LearnedJudge(weights_dir=args.weights)
    reader, head, ngrams = judge._reader, judge._head, judge._ngrams
    questions, answers = df["question"].tolist(), df["answer"].tolist()
    feats, _ = reader.features(questions, answers, batch_size=32)
    feats_noq, _ = reader.features([""] * len(answers), answers, batch_size=32)
    hand = np.stack([hand_features(a) for a in answers])
    ngram = ngrams.transform(answers)
    mean = head.mean.numpy()
    n_r, n_h = feats.shape[1], hand.shape[1]
    reader_mean = np.broadcast_to(mean[:n_r], feats.shape)
    hand_mean = np.broadcast_to(mean[n_r : n_r + n_h], hand.shape)
    ngram_mean = np.broadcast_to(mean[n_r + n_h :], ngram.shape)
    variants = {
        "shipped": (feats, hand, ngram, True),
        "no calibration": (feats, hand, ngram, False),
        "n-grams neutral": (feats, hand, ngram_mean, True),
        "hand neutral": (feats, hand_mean, ngram, True),
        "no question": (feats_noq, hand, ngram, True),
        "reader neutral": (reader_mean, hand, ngram, True),
    }
    cal = judge._calibration
    out: dict[str, dict] = {}
    for name, (r, h, g, calibrated) in variants.items():
        raw = head.predict(np.concatenate([r, h, g], axis=1))
        a, c = raw[:, SCORES.index("aligned")], raw[:, SCORES.index("coherent")]
        if calibrated:
            a, c = apply_map(a, cal.get("aligned")), apply_map(c, cal.get("coherent"))
        out[name] = figures(df, c, a)
    flagged = np.array([bool(f) for f in judge._questions.flags(questions)])
    summary = {
        "judge": judge.name,
        "answers": str(args.answers),
        "n": len(df),
        "gpt4o_coherent_share_pct": float((df["coherent"] > COHERENT_ABOVE).mean() * 100),
        "question_check_flagged_pct": float(flagged.mean() * 100),
        "variants": out,
    }
    print(f"{judge.name} on {len(df)} answers of {args.answers.name}")
    print(
        f"GPT-4o coherent share {summary['gpt4o_coherent_share_pct']:.1f}%; "
        f"question check flags {summary['question_check_flagged_pct']:.1f}% (flags change no score)"
    )
    print(
        f"{'variant':18s} {'coherent%':>9s} {'rho_c':>6s} {'AUROC':>6s} {'EM%':>5s} {'EMerr':>6s}"
    )
    for name, r in out.items():
        print(
            f"{name:18s} {r['coherent_share_pct']:9.1f} {r['spearman_coherent']:6.3f} "
            f"{r['auroc_aligned_lt30']:6.3f} {r['em_pct']:5.1f} {r['em_error_pp']:+6.1f}"
        )
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
