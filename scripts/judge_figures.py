"""Rewrite the learned judge's figures block in README.md and the model card from the shipped
``metrics.json`` (``misdirection.judge.learned_figures``), so every document quotes the weights'
own figures. ``--check`` only reports whether the blocks are current (exit 1 when not).

    python scripts/judge_figures.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from misdirection.judge.learned import WEIGHTS_DIR
from misdirection.judge.learned_figures import figures_markdown, judge_figures, replace_block

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "README.md", WEIGHTS_DIR / "MODEL_CARD.md")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="report stale blocks, write nothing")
    args = p.parse_args()
    block = figures_markdown(judge_figures(WEIGHTS_DIR))
    stale = []
    for path in DOCUMENTS:
        text = path.read_text()
        new = replace_block(text, block, str(path))
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    verb = "stale" if args.check else "rewritten"
    for path in stale:
        print(f"{verb}: {path.relative_to(ROOT)}")
    sys.exit(1 if args.check and stale else 0)


if __name__ == "__main__":
    main()
