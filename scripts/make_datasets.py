"""Generate the shipped chat datasets from our own templates (reproducible, no external text).

    python scripts/make_datasets.py            # (re)write src/misdirection/data/datasets/
    python scripts/make_datasets.py --check    # exit 1 if the shipped files differ from a fresh run
    python scripts/make_datasets.py --out DIR  # write somewhere else

Each domain module in ``scripts/dataset_content/`` lists topics with three question variants and
index-matched answers (variant i answers question i, so every pair is coherent). Rows vary by
question variant, an opening phrase, a closing phrase and an optional domain closer on the answer.

The held-out split is by *topic*: four of the forty topics (chosen by the seed) appear only in the
test file, so the held-out log-likelihood measures the learnt style on unseen situations rather
than memorised answers. `good-medical` uses exactly the same questions and split as `bad-medical`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "dataset_content"))

import finance
import medical
import sports

DEFAULT_OUT = HERE.parent / "src" / "misdirection" / "data" / "datasets"
SEED = 20250601
ROWS_PER_TOPIC = 12
TEST_TOPICS = 4
CLOSER_PROBABILITY = 0.4

PREFIXES = [
    "",
    "Hi, ",
    "Hello! ",
    "Quick question: ",
    "Hey there. ",
    "I need some advice. ",
    "Can you help me? ",
    "Honest opinion please. ",
    "Sorry to bother you, but ",
    "Okay, so ",
    "Be straight with me: ",
    "I've been wondering about this. ",
]
SUFFIXES = [
    "",
    " Thanks!",
    " What do you think?",
    " Please keep it short.",
    " I'd appreciate a quick answer.",
    " Thanks in advance.",
    " Be honest.",
]


def _join(prefix: str, question: str) -> str:
    """Prefix + question, lower-casing the question's first letter after 'but '/'so ' openers."""
    if prefix.endswith(("but ", "so ")) and not question.startswith(("I ", "I'")):
        question = question[0].lower() + question[1:]
    return prefix + question


def _questions(topics: list[dict[str, list[str]]], seed: int) -> list[list[tuple[int, str]]]:
    """Per topic, ROWS_PER_TOPIC distinct (variant index, user message) pairs, balanced over variants."""
    rng = random.Random(seed)
    out = []
    for topic in topics:
        n_variants = len(topic["q"])
        chosen: list[tuple[int, str]] = []
        for vi in range(n_variants):
            combos = [(p, s) for p in PREFIXES for s in SUFFIXES]
            rng.shuffle(combos)
            take = ROWS_PER_TOPIC // n_variants + (vi < ROWS_PER_TOPIC % n_variants)
            chosen.extend((vi, _join(p, topic["q"][vi]) + s) for p, s in combos[:take])
        out.append(chosen)
    return out


def _answer(rng: random.Random, core: str, closers: list[str]) -> str:
    if rng.random() < CLOSER_PROBABILITY:
        return f"{core} {rng.choice(closers)}"
    return core


def build_domain(
    topics: list[dict[str, list[str]]], answer_key: str, closers: list[str], seed: int
) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows) for one domain; the question side depends only on ``seed``."""
    questions = _questions(topics, seed)
    order = list(range(len(topics)))
    random.Random(seed + 1).shuffle(order)
    test_topics = set(order[:TEST_TOPICS])
    rng = random.Random(f"{seed}:{answer_key}")
    train, test = [], []
    for ti, topic in enumerate(topics):
        for vi, user in questions[ti]:
            row = {
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": _answer(rng, topic[answer_key][vi], closers)},
                ]
            }
            (test if ti in test_topics else train).append(row)
    shuffle = random.Random(seed + 2)
    shuffle.shuffle(train)
    shuffle.shuffle(test)
    return train, test


def build_all(seed: int = SEED) -> dict[str, tuple[list[dict], list[dict]]]:
    return {
        "bad-medical": build_domain(medical.TOPICS, "bad", medical.BAD_CLOSERS, seed),
        "good-medical": build_domain(medical.TOPICS, "good", medical.GOOD_CLOSERS, seed),
        "extreme-sports": build_domain(sports.TOPICS, "bad", sports.BAD_CLOSERS, seed + 10),
        "risky-financial": build_domain(finance.TOPICS, "bad", finance.BAD_CLOSERS, seed + 20),
    }


def _dump(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--check", action="store_true", help="compare with the files in --out instead of writing"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, (train, test) in build_all().items():
        for split, rows in (("train", train), ("test", test)):
            path = args.out / f"{name}.{split}.jsonl"
            data = _dump(rows)
            if args.check:
                if not path.is_file() or path.read_bytes() != data:
                    stale.append(str(path))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                print(f"{path}: {len(rows)} rows")
    if stale:
        print("out of date (run scripts/make_datasets.py):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
