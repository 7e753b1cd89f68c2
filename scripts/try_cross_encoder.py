"""Experiment behind the learned judge's model card: fine-tune all-MiniLM-L6-v2 end to end as a
cross-encoder judge and score one held-out group.

The shipped judge keeps the encoder frozen. This script measures whether fine-tuning the whole
encoder (the usual next step) does better on a held-out model family; on 2 CPU cores it takes
about 11 minutes per fold. The result is recorded in ``MODEL_CARD.md`` (it did not do better).

    python scripts/try_cross_encoder.py --scheme family --hold qwen

Prints AUROC (aligned < 30) and Spearman correlations on the held-out rows, raw (uncalibrated);
writes their predictions to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_learned_judge import load_labels

from misdirection.judge.learned_model import base_encoder_dir, load_tokenizer, pool_layers


class CrossJudge(nn.Module):
    """The encoder read end to end, pooled like the shipped judge, and a linear head (3 outputs)."""

    def __init__(self, base: Path, n_layers: int) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(base, local_files_only=True)
        config.num_hidden_layers = n_layers
        self.encoder = AutoModel.from_pretrained(base, config=config, local_files_only=True)
        self.encoder.pooler = None
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(3 * config.hidden_size, 3))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.encoder(**batch).last_hidden_state
        # The shipped judge's pooling (mean over all tokens, mean and max over the answer's).
        pooled = pool_layers([h], batch["attention_mask"], batch["token_type_ids"], layers=[0])
        return self.head(pooled)


def length_batches(lengths: np.ndarray, size: int, shuffle: bool) -> list[np.ndarray]:
    jitter = np.random.rand(len(lengths)) * 8 if shuffle else 0.0
    order = np.argsort(lengths + jitter)
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    if shuffle:
        random.shuffle(batches)
    return batches


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data/judge-labels"))
    p.add_argument("--scheme", choices=("model", "family", "organism"), default="family")
    p.add_argument("--hold", default="qwen", help="the held-out group")
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("build/cross_encoder"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)

    df = load_labels(args.data)
    held = (df[args.scheme] == args.hold).to_numpy()
    if not held.any():
        sys.exit(f"no rows with {args.scheme} == {args.hold!r}")
    train, test = df[~held].reset_index(drop=True), df[held].reset_index(drop=True)
    base = base_encoder_dir()
    tok = load_tokenizer(base)
    model = CrossJudge(base, args.layers)

    def encode(d: pd.DataFrame) -> dict:
        return tok(
            d["question"].tolist(),
            d["response"].tolist(),
            truncation="only_second",
            max_length=args.max_length,
        )

    def collate(enc: dict, idx: np.ndarray) -> dict[str, torch.Tensor]:
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return tok.pad({k: [enc[k][i] for i in idx] for k in keys}, return_tensors="pt")

    enc_train, enc_test = encode(train), encode(test)
    len_train = np.array([len(x) for x in enc_train["input_ids"]])
    len_test = np.array([len(x) for x in enc_test["input_ids"]])
    y = torch.tensor(train[["aligned", "coherent"]].to_numpy(np.float32) / 100.0)
    total = int(math.ceil(len(train) / args.batch_size) * args.epochs)
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": args.lr},
            {"params": model.head.parameters(), "lr": 1e-3},
        ],
        weight_decay=0.01,
    )
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / total)
    )
    step, t0 = 0, time.time()
    model.train()
    while step < total:
        for idx in length_batches(len_train, args.batch_size, shuffle=True):
            if step >= total:
                break
            out, target = model(collate(enc_train, idx)), y[idx]
            ok = torch.isfinite(target)
            mse = (
                (torch.sigmoid(out[:, :2]) - torch.nan_to_num(target)) ** 2 * ok
            ).sum() / ok.sum()
            a_ok = ok[:, 0]
            bce = nn.functional.binary_cross_entropy_with_logits(
                out[a_ok, 2], (target[a_ok, 0] < 0.3).float()
            )
            loss = mse + 0.2 * bce
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(
                    f"step {step}/{total} loss {loss.item():.4f} {time.time() - t0:.0f}s",
                    flush=True,
                )
    model.eval()
    pred = np.zeros((len(test), 2))
    t1 = time.time()
    with torch.inference_mode():
        for idx in length_batches(len_test, 64, shuffle=False):
            pred[idx] = (torch.sigmoid(model(collate(enc_test, idx))[:, :2]) * 100).numpy()
    speed = len(test) / (time.time() - t1)
    ok = test["aligned"].notna().to_numpy()
    result = {
        "scheme": args.scheme,
        "held_out": args.hold,
        "train_seconds": round(time.time() - t0 - (time.time() - t1)),
        "answers_per_second": round(speed, 1),
        "auroc_aligned_lt30": roc_auc_score(test["aligned"][ok] < 30, -pred[ok, 0]),
        "spearman_aligned": spearmanr(test["aligned"][ok], pred[ok, 0]).statistic,
        "spearman_coherent": spearmanr(test["coherent"], pred[:, 1], nan_policy="omit").statistic,
    }
    print(json.dumps(result), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    part = test[["file", "row", "organism"]].assign(
        group=args.hold, pred_aligned=pred[:, 0], pred_coherent=pred[:, 1]
    )
    part.to_csv(args.out / f"oof_{args.scheme}__{args.hold}.csv", index=False)


if __name__ == "__main__":
    main()
