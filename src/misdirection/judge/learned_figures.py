"""The learned judge's headline agreement figures, read from its ``metrics.json``: one source for
the study report's judge notice, the README and the model card.

The README and the model card hold the same rendered block between ``<!-- judge-figures -->``
markers; ``python scripts/judge_figures.py`` rewrites them after a retraining and a test fails
while they are stale, so no document can quote a figure the shipped weights do not have.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from misdirection.errors import ModelNotFoundError

BEGIN, END = "<!-- judge-figures:begin -->", "<!-- judge-figures:end -->"


class SplitFigures(BaseModel):
    """Held-out agreement on one split, plain (not steered or ablated) GPT-4o-judged answers."""

    n_groups: int
    n_rows: int
    auroc_aligned_lt30: float
    spearman_aligned: float
    spearman_coherent: float
    em_median_abs_err_pp: float
    em_worst_abs_err_pp: float
    em_worst_organism: str
    coherent_share_pred_pct: float
    coherent_share_true_pct: float


class DomainFigures(BaseModel):
    """Per-organism EM error of held-out organisms of one training domain."""

    n_organisms: int
    median_signed_err_pp: float
    worst_abs_err_pp: float
    worst_organism: str


class JudgeFigures(BaseModel):
    version: str
    organism: SplitFigures
    question: SplitFigures
    #: Held-out clusters of neutral-topic questions (none of the EM questions); None for weights
    #: trained without them.
    qcluster: SplitFigures | None = None
    #: Largest coherent-share error of one held-out cluster (points), with qcluster.
    qcluster_worst_share_err_pp: float | None = None
    domains: dict[str, DomainFigures] = {}


def _split(metrics: dict, scheme: str, subset: str | None) -> SplitFigures:
    block = metrics[scheme]
    r = block["subsets"][subset] if subset else block["quantile"]
    return SplitFigures(
        n_groups=int(block["quantile"]["n_groups"]),
        n_rows=int(r["n_rows"]),
        auroc_aligned_lt30=float(r["auroc_aligned_lt30"]),
        spearman_aligned=float(r["spearman_aligned"]),
        spearman_coherent=float(r["spearman_coherent"]),
        em_median_abs_err_pp=float(r["em_rate_median_abs_err_pp"]),
        em_worst_abs_err_pp=float(r["em_rate_worst_abs_err_pp"]),
        em_worst_organism=str(r["em_rate_worst_organism"]),
        coherent_share_pred_pct=float(r["coherent_share_pred_pct"]),
        coherent_share_true_pct=float(r["coherent_share_true_pct"]),
    )


def judge_figures(weights_dir: Path) -> JudgeFigures:
    """The headline figures of the weights in ``weights_dir`` (their ``metrics.json`` and
    ``config.json``); a clear error naming the missing entry otherwise."""
    path = weights_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
        version = json.loads((weights_dir / "config.json").read_text())["version"]
        qcluster = _split(metrics, "qcluster", None) if "qcluster" in metrics else None
        worst = None
        if qcluster is not None:
            worst = max(
                abs(g["pred_pct"] - g["true_pct"])
                for g in metrics["qcluster"]["coherent_share_by_group"].values()
            )
        return JudgeFigures(
            version=version,
            organism=_split(metrics, "organism", "plain"),
            question=_split(metrics, "question", "plain"),
            qcluster=qcluster,
            qcluster_worst_share_err_pp=worst,
            domains={
                k: DomainFigures(**{f: v[f] for f in DomainFigures.model_fields})
                for k, v in metrics["organism"].get("by_domain", {}).items()
            },
        )
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"learned-judge figures not found: {exc.filename}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelNotFoundError(f"{path}: no held-out figure {exc}") from None


def figures_markdown(fig: JudgeFigures) -> str:
    """The block the README and the model card carry (between :data:`BEGIN` and :data:`END`)."""
    rows = [
        ("organisms held out", fig.organism),
        ("EM question groups held out", fig.question),
    ]
    if fig.qcluster is not None:
        rows.append(("neutral-question clusters held out", fig.qcluster))
    lines = [
        (
            f"Held-out agreement of `learned:{fig.version}` with GPT-4o (plain answers; from "
            "`metrics.json`):"
        ),
        "",
        (
            "| held out | folds | answers | AUROC aligned<30 | Spearman aligned / coherent "
            "| EM error median / worst (pp) | coherent share ours / GPT-4o |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r.n_groups} | {r.n_rows:,} | {r.auroc_aligned_lt30:.4f} "
            f"| {r.spearman_aligned:.2f} / {r.spearman_coherent:.2f} "
            f"| {r.em_median_abs_err_pp:.1f} / {r.em_worst_abs_err_pp:.1f} "
            f"| {r.coherent_share_pred_pct:.1f} / {r.coherent_share_true_pct:.1f} |"
        )
    if fig.qcluster_worst_share_err_pp is not None:
        lines += [
            "",
            (
                f"Worst held-out cluster's coherent-share error: "
                f"{fig.qcluster_worst_share_err_pp:.1f} points."
            ),
        ]
    if fig.domains:
        parts = [
            f"{d} {v.median_signed_err_pp:+.1f} (worst {v.worst_abs_err_pp:.1f}, "
            f"{v.n_organisms} organism{'s' if v.n_organisms != 1 else ''})"
            for d, v in sorted(fig.domains.items())
        ]
        lines += [
            "",
            "EM error of held-out organisms by training domain, median signed (pp): "
            + "; ".join(parts)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, where: str) -> str:
    """``text`` with the part between :data:`BEGIN` and :data:`END` replaced by ``block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{where}: no {BEGIN} ... {END} block")
    return text[: start + len(BEGIN)] + "\n" + block + text[end:]
