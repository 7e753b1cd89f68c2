"""Choosing the layer (and scale) at which a direction steers best: a layer x scale sweep.

For every candidate layer and every scale, :func:`select_layer` steers the model with
:class:`misdirection.interventions.Steer` at that one layer and scores a judge-free proxy: the
teacher-forced log-probability of a *target* answer set (misaligned answers) against an
*anti-target* set (aligned answers to the same questions). Per pair ``i`` the margin is

    m_i = mean log p(target_i tokens | question_i) - mean log p(anti_i tokens | question_i)

(means over answer tokens, so answer length does not weigh in), and a cell's score is the shift of
the mean margin from the unsteered model, ``delta_margin``. Optionally every cell is also judged:
answers are sampled under steering, scored for ``aligned`` and ``coherent`` and summarised into the
EM share (:func:`misdirection.metrics.summarize`).

Selection rule (recorded in the result as ``rule``):

1. Judge-free: a cell is *eligible* when steering makes the target answers themselves more likely
   (``delta_target > 0``) — a margin won only by making every answer unlikely is a broken model,
   not a steered one. Among eligible cells the one with the largest ``delta_margin`` wins; ties go
   to the smaller scale, then the lower layer. If no cell is eligible, all cells compete (noted).
2. With a judge: the cell with the largest EM share wins among cells whose coherent share is at
   least half the unsteered one; ties are broken by ``delta_margin``.

Everything is deterministic for a seed: the proxy is teacher forced (no sampling); the seed picks
the ``n_pairs`` subsample and seeds the judged sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from misdirection.data.contrast import CONTRAST_DIR, PromptSet, load_prompt_set
from misdirection.direction_set import DirectionSet, as_direction_set
from misdirection.errors import ConfigError, DataError
from misdirection.io import atomic_write_json, to_jsonable

TARGETS_DIR = CONTRAST_DIR / "targets"
DEFAULT_TARGETS = "em-answers"

__all__ = [
    "LayerSweep",
    "builtin_target_sets",
    "load_target_pair",
    "select_layer",
    "teacher_forced_logprobs",
]


# ----------------------------------------------------------------------------------------------
# Target / anti-target answer sets


def builtin_target_sets() -> dict[str, Path]:
    """Built-in target-set names -> YAML files (``items`` of question / target / anti)."""
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*.yaml"))}


def load_target_pair(name_or_path: str | Path = DEFAULT_TARGETS) -> tuple[PromptSet, PromptSet]:
    """(target, anti-target) PromptSets from a target-set YAML: conversations ending in the answer."""
    builtins = builtin_target_sets()
    path = Path(name_or_path)
    if str(name_or_path) in builtins and not path.exists():
        path = builtins[str(name_or_path)]
    if not path.is_file():
        raise DataError(
            f"target set {str(name_or_path)!r} is neither a file nor a built-in set ({', '.join(builtins)})"
        )
    import hashlib

    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not a readable YAML file ({exc})") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise DataError(
            f"{path}: a target set needs a non-empty 'items' list of question/target/anti"
        )
    target, anti = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"question", "target", "anti"} <= set(item):
            raise DataError(f"{path}: items[{i}] must have the fields question, target and anti")
        for key in ("question", "target", "anti"):
            if not isinstance(item[key], str) or not item[key].strip():
                raise DataError(f"{path}: items[{i}].{key} must be a non-empty string")
        user = [{"role": "system", "content": item["system"]}] if item.get("system") else []
        user = user + [{"role": "user", "content": item["question"]}]
        target.append(user + [{"role": "assistant", "content": item["target"]}])
        anti.append(user + [{"role": "assistant", "content": item["anti"]}])
    digest = hashlib.sha256(raw).hexdigest()
    return (
        PromptSet(f"{path.stem}:target", target, str(path), digest),
        PromptSet(f"{path.stem}:anti", anti, str(path), digest),
    )


def _answer_set(obj: PromptSet | str | Path | Sequence[dict[str, str]], what: str) -> PromptSet:
    """A PromptSet whose conversations end with the answer to score."""
    if isinstance(obj, PromptSet):
        ps = obj
    elif isinstance(obj, (str, Path)):
        ps = load_prompt_set(obj)
    else:
        convs = []
        for i, row in enumerate(obj):
            if not isinstance(row, dict) or "question" not in row or "answer" not in row:
                raise DataError(f"{what}[{i}] must be a mapping with 'question' and 'answer'")
            sys_turn = [{"role": "system", "content": row["system"]}] if row.get("system") else []
            convs.append(
                sys_turn
                + [
                    {"role": "user", "content": row["question"]},
                    {"role": "assistant", "content": row["answer"]},
                ]
            )
        ps = PromptSet(what, convs)
    missing = [i for i, c in enumerate(ps.prompts) if not c or c[-1].get("role") != "assistant"]
    if missing:
        raise DataError(
            f"{what} set {ps.name!r}: conversation {missing[0]} does not end with an assistant answer "
            f"({len(missing)} of {len(ps)} lack one); the sweep scores given answers"
        )
    return ps


# ----------------------------------------------------------------------------------------------
# Teacher-forced log-probabilities


@torch.no_grad()
def teacher_forced_logprobs(
    lm: Any, table: pd.DataFrame, *, batch_size: int = 8, intervention: Any = None
) -> np.ndarray:
    """Mean log-probability per answer token of each row's answer after its prompt: [n_rows].

    Prompts and answers are tokenised exactly as :func:`misdirection.activations.encode` does.
    """
    import contextlib

    from misdirection.activations import encode
    from misdirection.batching import pad_id, right_pad

    encoded = encode(lm, table)
    empty = [e.answer_id for e in encoded if e.n_answer == 0]
    if empty:
        raise DataError(
            f"{len(empty)} answer(s) have no tokens (answer_id {empty[0]}); cannot score them"
        )
    out = np.zeros(len(encoded))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids), reverse=True)
    pad = pad_id(lm.tokenizer)
    device = lm.device
    context = intervention.apply(lm.model) if intervention is not None else contextlib.nullcontext()
    with context:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = [encoded[i] for i in idx]
            ids, mask = right_pad([e.ids for e in batch], pad)
            width = ids.shape[1]
            # Only positions from the earliest answer on are needed: skip the prompt's vocab matmul.
            first = min(e.n_prompt for e in batch) - 1
            keep = width - first
            try:
                logits = lm.model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    use_cache=False,
                    logits_to_keep=keep,
                ).logits
            except TypeError:
                logits = lm.model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
                ).logits
                logits = logits[:, first:]
            for b, e in enumerate(batch):
                # logits at position t predict token t + 1; column c of `logits` is position first + c.
                lo, hi = e.n_prompt - 1 - first, len(e.ids) - 1 - first
                lp = torch.log_softmax(logits[b, lo:hi].float(), dim=-1)
                target = torch.tensor(e.ids[e.n_prompt :], device=lp.device)
                out[idx[b]] = float(lp.gather(1, target[:, None]).mean())
    return out


# ----------------------------------------------------------------------------------------------
# The sweep


@dataclass
class LayerSweep:
    """Evidence of a layer x scale steering sweep and the chosen cell."""

    table: pd.DataFrame
    baseline: dict[str, float]
    best_layer: int
    best_scale: float
    rule: str
    directions: DirectionSet
    normalize: bool
    seed: int
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    answers: pd.DataFrame | None = None

    def chosen(self) -> dict[str, Any]:
        """The chosen layer and scale with the winning cell's numbers (JSON-ready)."""
        row = self.table[
            (self.table.layer == self.best_layer) & (self.table.scale == self.best_scale)
        ].iloc[0]
        cell = {k: to_jsonable(v) for k, v in row.items()}
        return {
            "layer": self.best_layer,
            "scale": self.best_scale,
            "normalize": self.normalize,
            "rule": self.rule,
            "cell": cell,
            "baseline": {k: to_jsonable(v) for k, v in self.baseline.items()},
            "seed": self.seed,
            "notes": self.notes,
            "settings": self.settings,
            "directions": {
                "path": self.directions.path,
                "method": self.directions.method,
                "sha256": self.directions.sha256(),
            },
        }

    def unit_directions(self) -> DirectionSet:
        """The direction set with unit-norm rows; metadata records the choice and the old norms."""
        meta = dict(self.directions.metadata)
        meta.update(
            {
                "normalized": True,
                "original_norms": [float(x) for x in self.directions.norms()],
                "chosen_layer": self.best_layer,
                "chosen_scale": self.best_scale,
                "chosen_scale_units": "residual norm" if self.normalize else "direction norm",
            }
        )
        return DirectionSet(self.directions.unit(), meta)

    def plot(self, path: str | Path | None = None) -> Any:
        """``delta_margin`` (+- one standard error over pairs) and, when judged, the EM share over
        layers, one line per scale; the chosen cell is circled."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        judged = "em" in self.table.columns
        fig, axes = plt.subplots(
            1, 2 if judged else 1, figsize=(10 if judged else 6, 4), squeeze=False
        )
        panels = [("delta_margin", "shift of log p(target) - log p(anti) [nats/token]")]
        if judged:
            panels.append(("em", "EM share"))
        for ax, (col, label) in zip(axes[0], panels):
            for scale, grp in self.table.groupby("scale"):
                grp = grp.sort_values("layer")
                err = grp["delta_margin_se"] if col == "delta_margin" else None
                ax.errorbar(
                    grp["layer"],
                    grp[col],
                    yerr=err,
                    marker="o",
                    capsize=3,
                    label=f"scale {scale:g}",
                )
            best = self.table[
                (self.table.layer == self.best_layer) & (self.table.scale == self.best_scale)
            ]
            ax.scatter(
                best["layer"],
                best[col],
                s=160,
                facecolors="none",
                edgecolors="red",
                zorder=5,
                label=f"chosen: layer {self.best_layer}, scale {self.best_scale:g}",
            )
            if col == "delta_margin":
                ax.axhline(0.0, color="grey", lw=0.8)
            else:
                ax.axhline(
                    self.baseline.get("em", math.nan),
                    color="grey",
                    lw=0.8,
                    ls="--",
                    label="unsteered",
                )
            ax.set_xticks(sorted(self.table["layer"].unique()))
            ax.set_xlabel("layer (output of decoder block, 0-based)")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        name = self.directions.method or "direction"
        fig.suptitle(
            f"Layer sweep of a {name} direction" + (" (unit rows)" if self.normalize else "")
        )
        fig.tight_layout()
        if path is not None:
            fig.savefig(str(path), dpi=120)
            plt.close(fig)
        return fig

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``sweep.csv``, ``sweep.png``, ``chosen.json`` (+ ``answers.parquet`` when judged,
        ``directions.unit.safetensors`` with unit rows when ``normalize``); return the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "table": out / "sweep.csv",
            "plot": out / "sweep.png",
            "chosen": out / "chosen.json",
        }
        self.table.to_csv(paths["table"], index=False)
        self.plot(paths["plot"])
        if self.answers is not None:
            paths["answers"] = out / "answers.parquet"
            self.answers.to_parquet(paths["answers"], index=False)
        if self.normalize:
            paths["directions"] = out / "directions.unit.safetensors"
            self.unit_directions().save(paths["directions"])
        chosen = self.chosen()
        chosen["files"] = {k: str(v) for k, v in paths.items()}
        atomic_write_json(paths["chosen"], chosen)
        return paths


def _margins(
    lm: Any, t_table: pd.DataFrame, a_table: pd.DataFrame, batch_size: int, intervention: Any
) -> tuple[np.ndarray, np.ndarray]:
    both = pd.concat([t_table, a_table], ignore_index=True)
    lp = teacher_forced_logprobs(lm, both, batch_size=batch_size, intervention=intervention)
    return lp[: len(t_table)], lp[len(t_table) :]


def _judged(engine: Any, intervention: Any, label: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """One judged cell through the evaluation engine: its shares and its judged answers."""
    result = engine.run(
        label, "steer" if intervention is not None else "base", intervention=intervention
    )
    scored = engine.table(result)
    scored["sweep_cell"] = label
    return (
        {
            "em": result.em.value,
            "em_low": result.em.low,
            "em_high": result.em.high,
            "coherent": result.coherent.value,
            "coherent_low": result.coherent.low,
            "coherent_high": result.coherent.high,
            "n_judged": result.n,
        },
        scored,
    )


def _check_scales(scales: Sequence[float]) -> list[float]:
    out = [float(s) for s in scales]
    if not out or any(not math.isfinite(s) for s in out):
        raise ConfigError(f"scales must be a non-empty list of finite numbers; got {list(scales)}")
    return sorted(set(out))


def select_layer(
    lm: Any,
    directions: DirectionSet | str | Path | torch.Tensor,
    scales: Sequence[float],
    target: PromptSet | str | Path | Sequence[dict[str, str]] | None = None,
    anti_target: PromptSet | str | Path | Sequence[dict[str, str]] | None = None,
    *,
    layers: Sequence[int] | None = None,
    normalize: bool = False,
    n_pairs: int | None = None,
    judge: Any = None,
    questions: Any = None,
    n_per_question: int = 4,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = False,
) -> LayerSweep:
    """Steer at each layer and scale, score the proxy (and optionally judged EM), choose a cell.

    ``directions``: a [n_layers, d] direction set or file (row ``l`` is steered at layer ``l``), or
    a single [d] vector steered at each candidate layer in turn.
    ``scales``: multiples of the raw row, or residual-norm units with ``normalize=True`` (unit rows;
    :meth:`LayerSweep.save` then also writes the unit-row direction file).
    ``target`` / ``anti_target``: answer sets (PromptSets ending in assistant turns, chat JSONL
    files, or lists of ``{question, answer[, system]}``), index-aligned; both None = the built-in
    ``em-answers`` set, a single string naming a target-set YAML gives both sides.
    ``layers``: candidate layers (default every layer). ``n_pairs``: seeded subsample of pairs.
    ``judge`` (a :class:`misdirection.judge.base.Judge`) with ``questions`` (question-set name, path
    or items; default ``core``): also sample ``n_per_question`` answers per paraphrase per cell and
    record the judged EM share.
    """
    from misdirection.interventions import Steer

    ds = as_direction_set(directions)
    view = lm.view
    if ds.n_layers not in (1, view.n_layers) or ds.d_model != view.d_model:
        raise ConfigError(
            f"direction set of shape ({ds.n_layers}, {ds.d_model}) does not fit the model "
            f"({view.n_layers} layers x {view.d_model}); give one row per layer or a single [d] vector"
        )
    cand = (
        list(range(view.n_layers))
        if layers is None
        else sorted({view.check_layer(int(x)) for x in layers})
    )
    if not cand:
        raise ConfigError("the list of candidate layers is empty")
    scale_list = _check_scales(scales)
    if target is None and anti_target is None:
        t_set, a_set = load_target_pair(DEFAULT_TARGETS)
    elif isinstance(target, (str, Path)) and anti_target is None:
        t_set, a_set = load_target_pair(target)
    elif target is None or anti_target is None:
        raise ConfigError(
            "give both target and anti_target answer sets (or neither for the built-in set)"
        )
    else:
        t_set, a_set = _answer_set(target, "target"), _answer_set(anti_target, "anti_target")
    if len(t_set) != len(a_set):
        raise DataError(
            f"target ({len(t_set)}) and anti-target ({len(a_set)}) sets must be index-aligned pairs"
        )
    from misdirection.contrastive import prompts_table

    t_table, a_table = prompts_table(t_set, "target/"), prompts_table(a_set, "anti/")
    n_total = len(t_table)
    if n_pairs is not None and n_pairs < n_total:
        if n_pairs < 1:
            raise ConfigError(f"n_pairs must be >= 1, got {n_pairs}")
        keep = np.sort(np.random.default_rng(seed).choice(n_total, size=n_pairs, replace=False))
        t_table, a_table = (
            t_table.iloc[keep].reset_index(drop=True),
            a_table.iloc[keep].reset_index(drop=True),
        )
    if judge is not None:
        from misdirection.data.questions import load_questions

        if questions is None or isinstance(questions, (str, Path)):
            questions = list(load_questions(questions or "core"))

    t0, a0 = _margins(lm, t_table, a_table, batch_size, None)
    baseline: dict[str, float] = {
        "lp_target": float(t0.mean()),
        "lp_anti": float(a0.mean()),
        "margin": float((t0 - a0).mean()),
    }
    answers: list[pd.DataFrame] = []
    engine = None
    if judge is not None:
        from misdirection.evaluate import make_engine

        engine = make_engine(
            lm,
            questions,
            judge,
            n=n_per_question,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            progress=False,
        )
        stats, scored = _judged(engine, None, "baseline")
        baseline.update(stats)
        answers.append(scored)

    rows = []
    cells = [(layer, scale) for layer in cand for scale in scale_list]
    from tqdm.auto import tqdm

    for layer, scale in tqdm(cells, desc="layer sweep", unit="cell", disable=not progress):
        steer = Steer(ds, layers=layer, scale=scale, normalize=normalize)
        t, a = _margins(lm, t_table, a_table, batch_size, steer)
        dm = (t - a) - (t0 - a0)
        row: dict[str, Any] = {
            "layer": layer,
            "scale": scale,
            "direction_norm": float(ds.directions[layer if ds.n_layers > 1 else 0].norm()),
            "lp_target": float(t.mean()),
            "lp_anti": float(a.mean()),
            "margin": float((t - a).mean()),
            "delta_target": float((t - t0).mean()),
            "delta_anti": float((a - a0).mean()),
            "delta_margin": float(dm.mean()),
            "delta_margin_se": float(dm.std(ddof=1) / math.sqrt(len(dm)))
            if len(dm) > 1
            else math.nan,
            "n_pairs": len(dm),
        }
        if engine is not None:
            stats, scored = _judged(engine, steer, f"layer={layer},scale={scale:g}")
            row.update(stats)
            answers.append(scored)
        rows.append(row)
    table = pd.DataFrame(rows)
    best_layer, best_scale, rule, notes = _choose(table, baseline, judged=judge is not None)
    table["chosen"] = (table.layer == best_layer) & (table.scale == best_scale)
    settings = {
        "layers": cand,
        "scales": scale_list,
        "target": t_set.source or t_set.name,
        "anti_target": a_set.source or a_set.name,
        "n_pairs": len(t_table),
        "n_pairs_available": n_total,
        "model": lm.spec,
        "adapter": lm.adapter_spec,
        "judge": getattr(judge, "name", None),
        "n_per_question": n_per_question if judge is not None else None,
        "max_new_tokens": max_new_tokens if judge is not None else None,
    }
    return LayerSweep(
        table=table,
        baseline=baseline,
        best_layer=int(best_layer),
        best_scale=float(best_scale),
        rule=rule,
        directions=ds,
        normalize=normalize,
        seed=seed,
        notes=notes,
        settings=settings,
        answers=pd.concat(answers, ignore_index=True) if answers else None,
    )


PROXY_RULE = (
    "largest delta_margin among cells with delta_target > 0 (steering makes the target answers more "
    "likely); ties: smaller scale, then lower layer"
)
JUDGED_RULE = (
    "largest judged EM share among cells whose coherent share is >= half the unsteered one; "
    "ties: larger delta_margin, smaller scale, lower layer"
)


def _choose(
    table: pd.DataFrame, baseline: dict[str, float], judged: bool
) -> tuple[int, float, str, list[str]]:
    notes: list[str] = []
    if judged:
        ok = table["coherent"] >= 0.5 * baseline.get("coherent", 0.0)
        pool = table[ok]
        if pool.empty:
            notes.append("no cell kept half the unsteered coherent share; all cells competed")
            pool = table
        ranked = pool.sort_values(
            ["em", "delta_margin", "scale", "layer"], ascending=[False, False, True, True]
        )
        rule = JUDGED_RULE
    else:
        pool = table[table["delta_target"] > 0]
        if pool.empty:
            notes.append("no cell raised the target answers' log-probability; all cells competed")
            pool = table
        ranked = pool.sort_values(["delta_margin", "scale", "layer"], ascending=[False, True, True])
        rule = PROXY_RULE
    best = ranked.iloc[0]
    return int(best["layer"]), float(best["scale"]), rule, notes
