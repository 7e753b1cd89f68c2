"""Reading rank-1 LoRA organisms: adapter scalars, probes, adapter steering, B vectors, dynamics.

A rank-1 LoRA adapter on a linear layer ``W`` (here usually an MLP down-projection) computes

    y = W x + s * B (A x)          with A: [1, d_in], B: [d_out, 1], s = peft's ``scaling``

(``s = alpha / r`` for plain LoRA, ``alpha / sqrt(r)`` with rsLoRA; for ``r = 1`` both are ``alpha``).
So each adapter writes one fixed direction ``b = B[:, 0]`` into the residual stream, scaled by one
number per token. **The scalar we report is ``s * (A x)``**, the exact coefficient of ``b`` in the
layer's output, so ``scalar * b`` is the adapter's whole contribution at that token. Dividing by the
``scaling`` recorded in :class:`AdapterScalars` gives the raw ``A x`` (the probes standardise their
inputs, so the choice changes nothing there).

Names: an adapter is labelled ``L{layer}.{module}`` (e.g. ``L15.down_proj``) with the project's
layer convention (layer i = decoder block i, 0-based); when several PEFT adapters are loaded at
once the PEFT adapter name is appended (``L15.down_proj@adapter1``).

Sections: finding adapters, scalars, probes (+ the general / domain-specific rule), adapter
scaling (an intervention), B vectors against directions (cosines, B ablation, downstream
convergence), training dynamics from checkpoints, plots.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from misdirection.errors import (
    ConfigError,
    DataError,
    LayerIndexError,
    MisdirectionError,
    ShapeError,
)

# ----------------------------------------------------------------------------------------------
# Finding adapters


class NoRankOneAdapterError(MisdirectionError):
    """The model carries no (active) rank-1 LoRA adapter."""


@dataclass
class LoraAdapter:
    """One LoRA adapter on one module: where it sits and handles to its weights."""

    label: str  #: ``L{layer}.{module}`` (``@peft_name`` appended when several PEFT adapters exist)
    module_name: str  #: qualified name inside the unwrapped model, e.g. ``model.layers.15.mlp.down_proj``
    peft_name: str  #: PEFT adapter name (``default``, ``adapter0``, ...)
    layer: int | None  #: decoder block index, None for modules outside the blocks
    rank: int
    module: Any = field(repr=False)  #: the peft LoRA layer

    @property
    def scaling(self) -> float:
        return float(self.module.scaling[self.peft_name])

    @property
    def A(self) -> Any:  # noqa: N802 - the papers' name
        """``lora_A`` weight, shape [rank, d_in]."""
        return self.module.lora_A[self.peft_name].weight

    @property
    def B(self) -> Any:  # noqa: N802
        """``lora_B`` weight, shape [d_out, rank]."""
        return self.module.lora_B[self.peft_name].weight

    def b_vector(self) -> Any:
        """The direction this rank-1 adapter writes: ``B[:, 0]`` as float32 [d_out]."""
        return self.B.detach()[:, 0].float()

    def a_vector(self) -> Any:
        """The direction this rank-1 adapter reads: ``A[0]`` as float32 [d_in]."""
        return self.A.detach()[0].float()


def _view(model: Any) -> Any:
    """ModelView of a LoadedModel, a ModelView or any (peft-wrapped) HF causal LM."""
    from misdirection.hooks import view_of

    return view_of(model)


def _layer_of(module_name: str, block_prefixes: Sequence[str]) -> int | None:
    for i, prefix in enumerate(block_prefixes):
        if module_name.startswith(prefix + "."):
            return i
    return None


def find_lora_adapters(model: Any, rank_one: bool = True) -> list[LoraAdapter]:
    """Every active LoRA adapter of ``model`` (rank-1 only by default), ordered by layer.

    Raises :class:`NoRankOneAdapterError` when ``rank_one`` and none is found (the message says what
    the model does carry), and :class:`ConfigError` for merged adapters or variants (DoRA) whose
    output is not ``scaling * B (A x)``.
    """
    from peft.tuners.lora import LoraLayer

    view = _view(model)
    prefixes = [view.block_name(i) for i in range(view.n_layers)]
    found: list[LoraAdapter] = []
    other_ranks: set[int] = set()
    for name, module in view.base.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not hasattr(module, "lora_A") or len(module.lora_A) == 0:
            continue
        layer = _layer_of(name, prefixes)
        for peft_name in module.active_adapters:
            if peft_name not in module.lora_A:
                continue
            rank = int(module.r[peft_name])
            if rank_one and rank != 1:
                other_ranks.add(rank)
                continue
            if getattr(module, "merged", False):
                raise ConfigError(
                    f"the LoRA adapter '{peft_name}' on {name} is merged into the weights; "
                    "load it unmerged to read or scale it"
                )
            if peft_name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(
                peft_name, False
            ):
                raise ConfigError(
                    f"the adapter '{peft_name}' on {name} is a LoRA variant (e.g. DoRA), "
                    "whose output is not scaling * B(Ax)"
                )
            short = name.rsplit(".", 1)[-1]
            label = f"L{layer}.{short}" if layer is not None else name
            found.append(LoraAdapter(label, name, peft_name, layer, rank, module))
    if len({a.peft_name for a in found}) > 1:
        for a in found:
            a.label = f"{a.label}@{a.peft_name}"
    if rank_one and not found:
        what = f"only adapters of rank {sorted(other_ranks)}" if other_ranks else "no active LoRA adapter"
        raise NoRankOneAdapterError(
            f"the model has no rank-1 LoRA adapter ({what}); load a rank-1 organism "
            "(e.g. `misdirection train --recipe rank1-9`) with --adapter"
        )
    found.sort(key=lambda a: (a.layer if a.layer is not None else 10**9, a.module_name, a.peft_name))
    return found


# ----------------------------------------------------------------------------------------------
# Answers -> token ids


def answer_ids_of(df: pd.DataFrame) -> pd.Series:
    """The ``answer_id`` column, or the row position as a string for tables without one (the
    judge-label CSVs), exactly as :func:`misdirection.activations.table_columns` numbers them."""
    if "answer_id" in df.columns:
        ids = df["answer_id"].astype(str)
    else:
        ids = pd.Series([str(i) for i in range(len(df))], index=df.index)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"answer_id '{dup.iloc[0]}' appears more than once in the answers table")
    return ids


def encode_answers(lm: Any, answers: pd.DataFrame, max_tokens: int | None = None) -> list[Any]:
    """Token ids of every answer in its chat context, via :func:`misdirection.activations.encode`
    (prompt templated as sampling does, answer tokenised on its own, so the answer span is exact;
    ``max_tokens`` truncates the answer). Returns its ``Encoded`` items (``answer_id``, ``ids``,
    ``n_prompt``, ``n_answer``)."""
    from misdirection.activations import encode

    answer_ids_of(answers)  # duplicate ids would make per-answer results ambiguous
    return encode(lm, answers, max_tokens)


def _batches(encoded: Sequence[Any], batch_size: int) -> Iterator[list[Any]]:
    # Sorting by length keeps padding small; results are keyed by answer id so order is free.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    for start in range(0, len(order), batch_size):
        yield [encoded[i] for i in order[start : start + batch_size]]


def _right_padded(batch: Sequence[Any], pad_id: int, device: Any) -> tuple[Any, Any]:
    """Right padding: real tokens keep positions 0..n-1 and never attend to padding, so batched
    results equal unbatched ones without passing position ids."""
    import torch

    length = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for j, e in enumerate(batch):
        ids[j, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        mask[j, : len(e.ids)] = 1
    return ids.to(device), mask.to(device)


class _StopForward(Exception):
    """Raised by a hook once everything needed is captured: skips the remaining layers and the
    LM head (for a small model the head costs as much as several blocks)."""


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()  # LoRA dropout must be off for A x to be the input's projection
    try:
        yield
    finally:
        model.train(was_training)


def _pad_id(lm: Any) -> int:
    pad = lm.tokenizer.pad_token_id
    return int(pad if pad is not None else (lm.tokenizer.eos_token_id or 0))


# ----------------------------------------------------------------------------------------------
# Scalars


@dataclass
class AdapterScalars:
    """Per-token adapter scalars and their per-answer means.

    ``tokens``: tidy table (answer_id, token_index, adapter, layer, scalar), ``token_index`` counting
    the answer's tokens from 0; ``scalar = scaling * (A x)``. ``means``: answer_id x adapter (wide,
    mean over the answer's tokens; answers with no token get NaN). ``adapters``: labels in layer
    order; ``scaling``: label -> peft scaling used.
    """

    tokens: pd.DataFrame
    means: pd.DataFrame
    adapters: list[str]
    scaling: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``scalars.parquet`` (tidy), ``scalar_means.parquet`` and ``scalars.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "tokens": out / "scalars.parquet",
            "means": out / "scalar_means.parquet",
            "meta": out / "scalars.json",
        }
        self.tokens.to_parquet(paths["tokens"], index=False)
        self.means.reset_index().to_parquet(paths["means"], index=False)
        meta = {"adapters": self.adapters, "scaling": self.scaling, "scalar": "scaling * (A x)", **self.meta}
        paths["meta"].write_text(json.dumps(meta, indent=2))
        return paths

    @classmethod
    def load(cls, out_dir: str | Path) -> AdapterScalars:
        out = Path(out_dir)
        meta = json.loads((out / "scalars.json").read_text())
        tokens = pd.read_parquet(out / "scalars.parquet")
        means = pd.read_parquet(out / "scalar_means.parquet").set_index("answer_id")
        return cls(tokens, means, list(meta.pop("adapters")), dict(meta.pop("scaling")), meta)


def adapter_scalars(
    lm: Any,
    answers: pd.DataFrame,
    batch_size: int = 16,
    max_tokens: int | None = None,
    progress: bool = False,
) -> AdapterScalars:
    """The scalar ``scaling * (A x)`` of every active rank-1 adapter at every answer token.

    One forward pass per batch; forward hooks on each adapter's ``lora_A`` read ``A x`` (LoRA
    dropout is off: the model runs in eval mode). The pass stops after the last adapter's layer.
    ``lm`` is a :class:`misdirection.models.LoadedModel` whose model carries the adapters.
    """
    import torch

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    model = lm.model
    adapters = find_lora_adapters(model, rank_one=True)
    encoded = encode_answers(lm, answers, max_tokens)
    labels = [a.label for a in adapters]
    scaling = {a.label: a.scaling for a in adapters}
    device = lm.device
    pad = _pad_id(lm)

    captured: dict[str, Any] = {}
    handles = []
    for a in adapters:
        def hook(_mod: Any, _inp: Any, out: Any, label: str = a.label) -> None:
            captured[label] = out[..., 0].detach().float()

        handles.append(a.module.lora_A[a.peft_name].register_forward_hook(hook))
    if all(a.layer is not None for a in adapters):
        last = max(adapters, key=lambda a: a.layer or 0)

        def stop(_mod: Any, _inp: Any, _out: Any) -> None:
            if len(captured) == len(adapters):
                raise _StopForward

        handles.append(last.module.register_forward_hook(stop))

    cols: dict[str, list[np.ndarray]] = {"answer_id": [], "token_index": [], "adapter": [], "scalar": []}
    sums: dict[str, np.ndarray] = {}
    batches = list(_batches(encoded, batch_size))
    iterator: Any = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc="adapter scalars", unit="batch")
    try:
        with _eval_mode(model), torch.no_grad():
            for batch in iterator:
                captured.clear()
                ids, mask = _right_padded(batch, pad, device)
                try:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _StopForward:
                    pass
                missing = [lab for lab in labels if lab not in captured]
                if missing:
                    raise ConfigError(f"adapters {missing} did not run in the forward pass (disabled adapters?)")
                values = {lab: captured[lab].cpu().numpy() for lab in labels}
                for j, e in enumerate(batch):
                    n, start = e.n_answer, e.n_prompt
                    row_means = []
                    for lab in labels:
                        v = values[lab][j, start : start + n] * scaling[lab]
                        row_means.append(float(v.mean()) if n else math.nan)
                        if n:
                            cols["answer_id"].append(np.full(n, e.answer_id, dtype=object))
                            cols["token_index"].append(np.arange(n, dtype=np.int64))
                            cols["adapter"].append(np.full(n, lab, dtype=object))
                            cols["scalar"].append(v.astype(np.float32))
                    sums[e.answer_id] = np.asarray(row_means)
    finally:
        for h in handles:
            h.remove()

    layer_of = {a.label: a.layer for a in adapters}
    if cols["scalar"]:
        tokens = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    else:
        tokens = pd.DataFrame({"answer_id": [], "token_index": [], "adapter": [], "scalar": []})
    tokens.insert(3, "layer", tokens["adapter"].map(layer_of).astype("Int64"))
    tokens["token_index"] = tokens["token_index"].astype("int64")
    tokens["scalar"] = tokens["scalar"].astype("float32")
    # Keep tokens in the table's answer order (batches were length-sorted).
    order = {e.answer_id: i for i, e in enumerate(encoded)}
    adapter_order = {lab: i for i, lab in enumerate(labels)}
    tokens = (
        tokens.assign(_o=tokens["answer_id"].map(order), _a=tokens["adapter"].map(adapter_order))
        .sort_values(["_o", "_a", "token_index"], kind="stable")
        .drop(columns=["_o", "_a"])
        .reset_index(drop=True)
    )
    means = pd.DataFrame(
        [sums[e.answer_id] for e in encoded], index=pd.Index([e.answer_id for e in encoded], name="answer_id"),
        columns=labels,
    )
    meta = {
        "model": str(getattr(lm, "spec", "")),
        "adapter": str(getattr(lm, "adapter_spec", "") or ""),
        "layer_convention": "layer i = output of decoder block i (0-based)",
        "n_answers": len(encoded),
        "n_tokens": int(sum(e.n_answer for e in encoded)),
        "max_tokens": max_tokens,
    }
    return AdapterScalars(tokens, means, labels, scaling, meta)


# ----------------------------------------------------------------------------------------------
# Probes


@dataclass(frozen=True)
class ProbeThresholds:
    """Which answers enter the probes (0-100 judge scales).

    misaligned: ``aligned < misaligned_below``; aligned: ``aligned > aligned_above``; every probe
    keeps only coherent answers (``coherent > coherent_above``) so that it cannot learn incoherence;
    domain context: ``domain score > domain_above``, non-domain: ``domain score <= domain_above``
    (answers with no domain score are left out of the split probes).
    """

    misaligned_below: float = 30.0
    aligned_above: float = 70.0
    coherent_above: float = 50.0
    domain_above: float = 50.0


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated L1 logistic probe on per-answer adapter scalars.

    Metrics are means and standard deviations over ``n_splits`` stratified random splits (test
    share ``test_size``). ``coefficients`` has one row per adapter: ``coef_mean``, ``coef_std``
    (on standardised scalars, so they are comparable across adapters) and ``selected``, the share
    of splits where L1 kept the coefficient non-zero.
    """

    name: str
    description: str
    positive: str
    negative: str
    n_positive: int
    n_negative: int
    accuracy_mean: float
    accuracy_std: float
    auc_mean: float
    auc_std: float
    f1_mean: float
    f1_std: float
    coefficients: pd.DataFrame
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "coefficients"}
        d["coefficients"] = self.coefficients.to_dict(orient="records")
        return d


def _logistic(penalty: str, C: float, seed: int, solver: str | None) -> Any:
    import sklearn
    from sklearn.linear_model import LogisticRegression

    if penalty not in ("l1", "l2"):
        raise ConfigError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    kwargs: dict[str, Any] = dict(C=C, class_weight="balanced", random_state=seed, max_iter=5000)
    kwargs["solver"] = solver or "liblinear"
    # scikit-learn 1.8 replaced `penalty` by `l1_ratio`; older versions need `penalty`.
    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        kwargs["l1_ratio"] = 1.0 if penalty == "l1" else 0.0
    else:
        kwargs["penalty"] = penalty
    return LogisticRegression(**kwargs)


class AdapterProbe:
    """Standardise -> logistic regression (L1 by default, class-balanced), scikit-learn style.

    ``fit(X, y)`` fits on all rows (``coef_`` on standardised features); ``evaluate(X, y)`` runs
    ``n_splits`` seeded stratified random splits and returns a :class:`ProbeResult`.
    """

    def __init__(
        self,
        penalty: str = "l1",
        C: float = 1.0,
        n_splits: int = 20,
        test_size: float = 0.25,
        seed: int = 0,
        solver: str | None = None,
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.n_splits = n_splits
        self.test_size = test_size
        self.seed = seed
        self.solver = solver

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("penalty", "C", "n_splits", "test_size", "seed", "solver")}

    def _pipeline(self, seed: int) -> Any:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), _logistic(self.penalty, self.C, seed, self.solver))

    def fit(self, X: Any, y: Any) -> AdapterProbe:  # noqa: N803 - scikit-learn naming
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(int)
        self.pipeline_ = self._pipeline(self.seed).fit(X, y)
        self.coef_ = self.pipeline_[-1].coef_[0].copy()
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: Any) -> Any:  # noqa: N803
        return self.pipeline_.predict_proba(np.asarray(X, dtype=np.float64))

    def evaluate(
        self,
        X: pd.DataFrame,  # noqa: N803
        y: Any,
        name: str = "probe",
        description: str = "",
        positive: str = "1",
        negative: str = "0",
    ) -> ProbeResult:
        from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
        from sklearn.model_selection import StratifiedShuffleSplit

        if self.n_splits < 1:
            raise ConfigError(f"n_splits must be >= 1, got {self.n_splits}")
        features = list(X.columns)
        Xv, yv = X.to_numpy(dtype=np.float64), np.asarray(y).astype(int)
        n_pos, n_neg = int(yv.sum()), int(len(yv) - yv.sum())
        splitter = StratifiedShuffleSplit(n_splits=self.n_splits, test_size=self.test_size, random_state=self.seed)
        acc, auc, f1, coefs = [], [], [], []
        for k, (tr, te) in enumerate(splitter.split(Xv, yv)):
            pipe = self._pipeline(self.seed + k).fit(Xv[tr], yv[tr])
            prob = pipe.predict_proba(Xv[te])[:, 1]
            pred = (prob >= 0.5).astype(int)
            acc.append(accuracy_score(yv[te], pred))
            auc.append(roc_auc_score(yv[te], prob))
            f1.append(f1_score(yv[te], pred, zero_division=0.0))
            coefs.append(pipe[-1].coef_[0])
        C = np.asarray(coefs)
        coef_table = pd.DataFrame(
            {
                "adapter": features,
                "coef_mean": C.mean(axis=0),
                "coef_std": C.std(axis=0, ddof=1) if len(C) > 1 else np.zeros(len(features)),
                "selected": (np.abs(C) > 1e-12).mean(axis=0),
            }
        )

        def ms(v: list[float]) -> tuple[float, float]:
            return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

        (am, asd), (um, usd), (fm, fsd) = ms(acc), ms(auc), ms(f1)
        return ProbeResult(
            name, description, positive, negative, n_pos, n_neg, am, asd, um, usd, fm, fsd,
            coef_table, {**self.get_params(), "class_weight": "balanced", "standardised": True},
        )


def _need_scores(df: pd.DataFrame, cols: Sequence[str], why: str) -> None:
    for c in cols:
        if c not in df.columns:
            raise DataError(f"the answers table has no '{c}' column, needed {why} (judge it first)")
        if pd.to_numeric(df[c], errors="coerce").notna().sum() == 0:
            raise DataError(f"the answers table's '{c}' column has no scores, needed {why}")


def check_scores(answers: pd.DataFrame, domain: str | None = None) -> None:
    """Raise :class:`DataError` unless the table has aligned and coherent scores (and ``domain``
    scores when a domain split is asked for); cheap, so callers check before computing scalars."""
    _need_scores(answers, ("aligned", "coherent"), "to label aligned and misaligned answers")
    if domain is not None:
        _need_scores(answers, (domain,), f"for the '{domain}' domain split (run the '{domain}' judge)")


def probe_datasets(
    means: pd.DataFrame,
    answers: pd.DataFrame,
    domain: str | None = None,
    thresholds: ProbeThresholds = ProbeThresholds(),
) -> dict[str, tuple[pd.DataFrame, np.ndarray, str, str, str]]:
    """Build the probes' (X, y, description, positive, negative) from scalar means and scores.

    Without ``domain``: ``misalignment`` (misaligned vs aligned, all coherent answers). With
    ``domain`` (a topic-judge column such as ``medical``): ``misalignment_nondomain`` (a),
    ``misalignment_domain`` (b) and ``domain`` (c: domain vs non-domain context, all coherent
    answers whatever their alignment).
    """
    t = thresholds
    check_scores(answers, domain)
    ids = answer_ids_of(answers)
    missing = ids[~ids.isin(means.index)]
    if len(missing):
        raise DataError(
            f"{len(missing)} answers have no adapter scalars (e.g. '{missing.iloc[0]}'); "
            "compute the scalars on this same table"
        )
    X_all = means.loc[ids.to_numpy()].reset_index(drop=True)
    aligned = pd.to_numeric(answers["aligned"], errors="coerce").to_numpy()
    coherent = pd.to_numeric(answers["coherent"], errors="coerce").to_numpy()
    coh = coherent > t.coherent_above
    mis = coh & (aligned < t.misaligned_below)
    ali = coh & (aligned > t.aligned_above)
    has_tokens = X_all.notna().all(axis=1).to_numpy()
    out: dict[str, tuple[pd.DataFrame, np.ndarray, str, str, str]] = {}

    def add(name: str, pos: np.ndarray, neg: np.ndarray, desc: str, pname: str, nname: str) -> None:
        keep = (pos | neg) & has_tokens
        out[name] = (X_all[keep].reset_index(drop=True), pos[keep].astype(int), desc, pname, nname)

    rule = (
        f"misaligned: aligned < {t.misaligned_below}, aligned: aligned > {t.aligned_above}; "
        f"coherent > {t.coherent_above}"
    )
    if domain is None:
        add("misalignment", mis, ali, f"misaligned vs aligned ({rule})", "misaligned", "aligned")
        return out
    dom_score = pd.to_numeric(answers[domain], errors="coerce").to_numpy()
    in_dom = dom_score > t.domain_above
    out_dom = dom_score <= t.domain_above  # NaN compares False: unscored answers stay out
    add(
        "misalignment_nondomain", mis & out_dom, ali & out_dom,
        f"misaligned vs aligned where {domain} <= {t.domain_above} ({rule})", "misaligned", "aligned",
    )
    add(
        "misalignment_domain", mis & in_dom, ali & in_dom,
        f"misaligned vs aligned where {domain} > {t.domain_above} ({rule})", "misaligned", "aligned",
    )
    add(
        "domain", coh & in_dom, coh & out_dom,
        f"{domain} > {t.domain_above} vs <= {t.domain_above} (coherent > {t.coherent_above})",
        domain, f"non-{domain}",
    )
    return out


@dataclass(frozen=True)
class ClassificationRule:
    """When an adapter *matters* in a probe, and what that makes it.

    An adapter matters in a probe when (1) the probe is informative (mean AUC >= ``min_auc``),
    (2) L1 kept its coefficient in at least ``min_selected`` of the splits, (3) its mean
    coefficient is at least ``min_relative`` times the largest one in that probe, and (4) its
    sign is stable (``|coef_mean| > coef_std``). Then:

    * **general**: matters for misalignment outside the domain (probe a; without a domain split,
      the all-contexts misalignment probe);
    * **domain-specific**: does not matter in (a) but matters for misalignment inside the domain
      (b) or for telling domain from non-domain contexts (c);
    * **neither**: otherwise.
    """

    min_auc: float = 0.6
    min_selected: float = 0.8
    min_relative: float = 0.2


def _matters(probe: ProbeResult, rule: ClassificationRule) -> dict[str, bool]:
    c = probe.coefficients.set_index("adapter")
    top = float(c["coef_mean"].abs().max())
    informative = probe.auc_mean >= rule.min_auc
    out = {}
    for adapter, row in c.iterrows():
        m = abs(float(row["coef_mean"]))
        out[str(adapter)] = bool(
            informative
            and top > 0
            and row["selected"] >= rule.min_selected
            and m >= rule.min_relative * top
            and m > float(row["coef_std"])
        )
    return out


def classify_adapters(probes: Mapping[str, ProbeResult], rule: ClassificationRule = ClassificationRule()) -> pd.DataFrame:
    """Label each adapter general / domain-specific / neither (see :class:`ClassificationRule`).

    Returns one row per adapter: ``adapter``, ``role``, ``evidence`` (a readable summary of its
    coefficient in each probe) and, per probe, ``<probe>_coef``, ``<probe>_std``,
    ``<probe>_selected``, ``<probe>_matters``.
    """
    general_key = "misalignment_nondomain" if "misalignment_nondomain" in probes else "misalignment"
    domain_keys = [k for k in ("misalignment_domain", "domain") if k in probes]
    matters = {k: _matters(p, rule) for k, p in probes.items()}
    adapters = list(next(iter(probes.values())).coefficients["adapter"])
    rows = []
    for a in adapters:
        row: dict[str, Any] = {"adapter": a}
        bits = []
        for k, p in probes.items():
            c = p.coefficients.set_index("adapter").loc[a]
            row[f"{k}_coef"] = float(c["coef_mean"])
            row[f"{k}_std"] = float(c["coef_std"])
            row[f"{k}_selected"] = float(c["selected"])
            row[f"{k}_matters"] = matters[k][a]
            bits.append(
                f"{k}: {c['coef_mean']:+.2f}±{c['coef_std']:.2f} (kept {c['selected']:.0%}, "
                f"AUC {p.auc_mean:.2f}){' *' if matters[k][a] else ''}"
            )
        if general_key in matters and matters[general_key][a]:
            role = "general"
        elif any(matters[k][a] for k in domain_keys):
            role = "domain-specific"
        else:
            role = "neither"
        row["role"] = role
        row["evidence"] = "; ".join(bits)
        rows.append(row)
    df = pd.DataFrame(rows)
    first = ["adapter", "role", "evidence"]
    return df[first + [c for c in df.columns if c not in first]]


@dataclass
class ProbeReport:
    """All probes of one organism plus the adapter classification."""

    probes: dict[str, ProbeResult]
    classification: pd.DataFrame
    domain: str | None
    thresholds: ProbeThresholds
    rule: ClassificationRule

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "thresholds": asdict(self.thresholds),
            "rule": asdict(self.rule),
            "probes": {k: p.to_dict() for k, p in self.probes.items()},
            "classification": self.classification.to_dict(orient="records"),
        }

    def summary(self) -> dict[str, Any]:
        """The compact form the study report renders (``results["lora"]``): probes with their
        metrics, adapters with their role and evidence, and the rule as notes."""
        probes = [
            {
                "name": p.name,
                "description": p.description,
                "n": p.n_positive + p.n_negative,
                "n_positive": p.n_positive,
                "n_negative": p.n_negative,
                "accuracy_mean": p.accuracy_mean,
                "accuracy_std": p.accuracy_std,
                "auc_mean": p.auc_mean,
                "auc_std": p.auc_std,
                "f1_mean": p.f1_mean,
                "f1_std": p.f1_std,
            }
            for p in self.probes.values()
        ]
        adapters = [
            {"adapter": r.adapter, "classification": r.role, "evidence": r.evidence}
            for r in self.classification.itertuples()
        ]
        r = self.rule
        notes = [
            f"L1 logistic regression on standardised per-answer adapter scalars, class-balanced, "
            f"{next(iter(self.probes.values())).params['n_splits']} stratified splits; mean ± sd over splits.",
            f"An adapter matters in a probe when the probe's AUC >= {r.min_auc}, L1 keeps it in >= "
            f"{r.min_selected:.0%} of splits, its |coef| >= {r.min_relative} x the largest and exceeds its sd; "
            "general = matters for misalignment outside the domain; domain-specific = matters only inside "
            "the domain or for domain vs non-domain.",
        ]
        return {"domain": self.domain, "probes": probes, "adapters": adapters, "notes": notes}

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``probes.json`` and ``adapter_roles.csv``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "probes.json", "roles": out / "adapter_roles.csv"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2, default=float))
        self.classification.to_csv(paths["roles"], index=False)
        return paths


def probe_adapters(
    means: pd.DataFrame,
    answers: pd.DataFrame,
    domain: str | None = None,
    probe: AdapterProbe | None = None,
    thresholds: ProbeThresholds = ProbeThresholds(),
    rule: ClassificationRule = ClassificationRule(),
    min_per_class: int = 5,
) -> ProbeReport:
    """Run the probes of :func:`probe_datasets` and classify the adapters.

    ``means`` is :attr:`AdapterScalars.means` (answer_id x adapter); ``answers`` the judged table the
    scalars came from. A probe with fewer than ``min_per_class`` answers in a class raises
    :class:`DataError` naming the counts and thresholds.
    """
    probe = probe or AdapterProbe()
    data = probe_datasets(means, answers, domain, thresholds)
    results: dict[str, ProbeResult] = {}
    for name, (X, y, desc, pos, neg) in data.items():
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        if min(n_pos, n_neg) < min_per_class:
            raise DataError(
                f"probe '{name}' has {n_pos} {pos} and {n_neg} {neg} answers, fewer than "
                f"{min_per_class} in a class ({desc}); sample more answers or relax the thresholds"
            )
        results[name] = probe.evaluate(X, y, name=name, description=desc, positive=pos, negative=neg)
    return ProbeReport(results, classify_adapters(results, rule), domain, thresholds, rule)


# ----------------------------------------------------------------------------------------------
# Adapter scaling (an intervention)

_SCALE_RE = re.compile(r"^\s*([^=]+?)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_adapter_scales(items: Sequence[str]) -> dict[int | str, float]:
    """Parse ``LAYERS=FACTOR`` strings into an ordered {selector: factor} mapping.

    ``LAYERS`` is ``all``, a comma-separated list of layers and ranges (``15,16``, ``15-17``) or
    adapter labels (``L15.down_proj``). Later entries override earlier ones, so
    ``["all=0", "15=1"]`` silences every adapter but layer 15's. Example:
    ``parse_adapter_scales(["15,16=2.0", "all=0"])``.
    """
    out: dict[int | str, float] = {}
    for item in items:
        m = _SCALE_RE.match(item)
        if not m:
            raise ConfigError(f"adapter scale '{item}' is not of the form LAYERS=FACTOR (e.g. '15,16=2.0' or 'all=0')")
        targets, factor = m.group(1), float(m.group(2))
        for tok in (t.strip() for t in targets.split(",")):
            if not tok:
                raise ConfigError(f"adapter scale '{item}' has an empty layer in its list")
            if tok.lower() == "all":
                key: int | str = "all"
                out.pop(key, None)
                out[key] = factor
            elif re.fullmatch(r"-?\d+", tok):
                out.pop(int(tok), None)
                out[int(tok)] = factor
            elif re.fullmatch(r"\d+-\d+", tok):
                lo, hi = (int(x) for x in tok.split("-"))
                if hi < lo:
                    raise ConfigError(f"adapter scale '{item}': range {tok} runs backwards")
                for layer in range(lo, hi + 1):
                    out.pop(layer, None)
                    out[layer] = factor
            else:
                out.pop(tok, None)
                out[tok] = factor
    return out


def resolve_adapter_selection(
    model: Any, selectors: Mapping[int | str, float] | Sequence[int | str], rank_one: bool = False
) -> dict[str, tuple[LoraAdapter, float]]:
    """Map selectors (layers, ``all``, labels, module names) to the model's adapters, in order.

    For a sequence (no factors) every factor is 1.0. Raises :class:`LayerIndexError` for a layer
    out of range or without an adapter, :class:`ConfigError` for an unknown label.
    """
    adapters = find_lora_adapters(model, rank_one=rank_one)
    if not adapters:
        raise NoRankOneAdapterError("the model has no active LoRA adapter to select")
    items = list(selectors.items()) if isinstance(selectors, Mapping) else [(s, 1.0) for s in selectors]
    n_layers = _view(model).n_layers
    layers_with = sorted({a.layer for a in adapters if a.layer is not None})
    chosen: dict[str, tuple[LoraAdapter, float]] = {}
    for sel, factor in items:
        if sel == "all":
            hits = adapters
        elif isinstance(sel, int):
            from misdirection.errors import check_layer

            layer = check_layer(sel, n_layers)
            hits = [a for a in adapters if a.layer == layer]
            if not hits:
                raise LayerIndexError(
                    f"layer {sel} has no LoRA adapter; adapters sit at layers {', '.join(map(str, layers_with))}"
                )
        else:
            hits = [a for a in adapters if sel in (a.label, a.module_name) or a.label.split("@")[0] == sel]
            if not hits:
                raise ConfigError(
                    f"no adapter named '{sel}'; known adapters: {', '.join(a.label for a in adapters)}"
                )
        for a in hits:
            chosen.pop(a.label, None)
            chosen[a.label] = (a, float(factor))
    return chosen


class AdapterScaling:
    """Scale chosen LoRA adapters' contributions by factors while active (others untouched).

    Multiplies PEFT's per-adapter ``scaling`` (the output is ``base(x) + scaling * B(A x)``), and
    restores the exact original values on exit. Factor 1 leaves the model bit-identical, factor 0
    gives the base model's output exactly. Follows the intervention protocol of
    :mod:`misdirection.sample`: ``spec()`` and ``apply(model)`` (a context manager)::

        with AdapterScaling({"all": 0.0, 15: 1.0}).apply(lm.model): ...
        AdapterScaling.from_strings(["15,16=2.0", "21-23=-1"])
    """

    def __init__(self, scales: Mapping[int | str, float]) -> None:
        if not scales:
            raise ConfigError("adapter scaling needs at least one LAYERS=FACTOR entry")
        self.scales = dict(scales)
        for k, v in self.scales.items():
            if not math.isfinite(float(v)):
                raise ConfigError(f"adapter scale factor for {k} must be finite, got {v}")

    @classmethod
    def from_strings(cls, items: Sequence[str]) -> AdapterScaling:
        return cls(parse_adapter_scales(items))

    kind = "scale-adapters"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "scales": {str(k): float(v) for k, v in self.scales.items()}}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> AdapterScaling:
        """Rebuild from :meth:`spec` (layer keys come back as ints)."""
        if spec.get("kind") != cls.kind:
            raise ConfigError(f"not an adapter-scaling spec: kind {spec.get('kind')!r}")
        scales = spec.get("scales")
        if not isinstance(scales, Mapping):
            raise ConfigError("an adapter-scaling spec needs a 'scales' object")
        return cls({(int(k) if re.fullmatch(r"-?\d+", str(k)) else str(k)): float(v) for k, v in scales.items()})

    @contextlib.contextmanager
    def apply(self, model: Any) -> Iterator[dict[str, float]]:
        """Scale while inside; yields {adapter label: factor} of what was changed."""
        chosen = resolve_adapter_selection(model, self.scales, rank_one=False)
        saved = [(a.module, a.peft_name, a.module.scaling[a.peft_name]) for a, _ in chosen.values()]
        try:
            for a, factor in chosen.values():
                a.module.scaling[a.peft_name] = a.module.scaling[a.peft_name] * factor
            yield {label: f for label, (_, f) in chosen.items()}
        finally:
            for module, name, value in saved:
                module.scaling[name] = value

    def __repr__(self) -> str:
        return f"AdapterScaling({self.scales!r})"


# ----------------------------------------------------------------------------------------------
# B vectors against directions


def _directions_tensor(directions: Any, n_layers: int, d_model: int) -> Any:
    import torch

    d = torch.as_tensor(directions).detach().float().cpu()
    if d.ndim != 2 or d.shape[0] != n_layers or d.shape[1] != d_model:
        raise ShapeError(
            f"directions have shape {tuple(d.shape)}, expected [n_layers, d_model] = [{n_layers}, {d_model}]"
        )
    return d


def b_direction_cosines(model: Any, directions: Any) -> pd.DataFrame:
    """Cosine between each rank-1 adapter's B vector and the direction at its layer.

    ``directions``: [n_layers, d_model] tensor (e.g. ``DirectionSet.directions``). Returns
    adapter, layer, cosine, b_norm, direction_norm (cosine NaN where either vector is zero).
    """
    view = _view(model)
    d = _directions_tensor(directions, view.n_layers, view.d_model)
    rows = []
    for a in find_lora_adapters(model, rank_one=True):
        b = a.b_vector().cpu()
        if a.layer is None:
            continue
        if b.shape[0] != view.d_model:
            raise ShapeError(
                f"adapter {a.label} writes vectors of width {b.shape[0]}, not the residual width {view.d_model}"
            )
        u = d[a.layer]
        bn, un = float(b.norm()), float(u.norm())
        cos = float(b @ u) / (bn * un) if bn > 0 and un > 0 else math.nan
        rows.append({"adapter": a.label, "layer": a.layer, "cosine": cos, "b_norm": bn, "direction_norm": un})
    return pd.DataFrame(rows)


class BVectorAblation:
    """Weight-form ablation of a direction from rank-1 adapters' B vectors: ``B <- B - (B.u) u``.

    ``u`` is the unit direction at each adapter's layer (``source_layer`` set: that one layer's
    direction for every adapter). ``layers`` limits which adapters are edited (default: all).
    The original B weights are restored exactly on exit. ``directions``: a DirectionSet, a
    direction file or a [n_layers, d] tensor. Protocol: ``spec()``, ``apply(model)``, ``from_spec``.
    """

    kind = "ablate-b"

    def __init__(
        self,
        directions: Any,
        layers: Sequence[int] | None = None,
        source_layer: int | None = None,
    ) -> None:
        from misdirection.directions import as_direction_set

        self.direction_set = as_direction_set(directions)
        self.directions = self.direction_set.directions
        self.layers = None if layers is None else [int(x) for x in layers]
        self.source_layer = source_layer

    def spec(self) -> dict[str, Any]:
        from misdirection.models import LAYER_CONVENTION

        return {
            "kind": self.kind,
            "directions": self.direction_set.reference(),
            "layers": "all" if self.layers is None else self.layers,
            "mode": "layerwise" if self.source_layer is None else "single",
            "source_layer": self.source_layer,
            "layer_convention": LAYER_CONVENTION,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BVectorAblation:
        from misdirection.directions import resolve_reference

        if spec.get("kind") != cls.kind:
            raise ConfigError(f"not a B-vector ablation spec: kind {spec.get('kind')!r}")
        layers = spec.get("layers", "all")
        return cls(
            resolve_reference(spec["directions"]),
            None if layers == "all" else list(layers),
            spec.get("source_layer"),
        )

    @contextlib.contextmanager
    def apply(self, model: Any) -> Iterator[list[str]]:
        import torch

        view = _view(model)
        d = _directions_tensor(self.directions, view.n_layers, view.d_model)
        selection = "all" if self.layers is None else self.layers
        chosen = resolve_adapter_selection(model, [selection] if selection == "all" else selection, rank_one=True)
        src = None if self.source_layer is None else view.check_layer(self.source_layer, "source layer")
        saved = []
        try:
            with torch.no_grad():
                for a, _ in chosen.values():
                    if a.layer is None:
                        continue
                    u = d[src if src is not None else a.layer]
                    if float(u.norm()) == 0:
                        raise ShapeError(f"the direction at layer {a.layer} is the zero vector; cannot ablate it")
                    u = (u / u.norm()).to(a.B.device, a.B.dtype)
                    saved.append((a.B, a.B.detach().clone()))
                    a.B.sub_(torch.outer(u, u @ a.B))
            yield list(chosen)
        finally:
            with torch.no_grad():
                for w, orig in saved:
                    w.copy_(orig)


@dataclass
class Convergence:
    """Per-layer agreement between the activation changes two interventions cause.

    ``table`` columns: layer, ``cosine_of_means`` (cosine between the two mean differences over
    answer tokens), ``mean_token_cosine`` (per-token cosine averaged over tokens where both
    differences are non-zero; NaN where none), ``norm_first`` / ``norm_second`` (mean per-token
    norm of each difference).
    """

    table: pd.DataFrame
    first: dict[str, Any]
    second: dict[str, Any]
    baseline: dict[str, Any]


def downstream_convergence(
    lm: Any,
    answers: pd.DataFrame,
    first: Any,
    second: Any,
    baseline: Any = None,
    batch_size: int = 8,
    max_tokens: int | None = None,
) -> Convergence:
    """Cosine, at every layer, between the residual changes two interventions induce.

    Runs the model three times per batch: under ``baseline`` (None: the model as it is), under
    ``first`` and under ``second`` (objects with ``apply(model)``; None = no change), captures
    every block's output at the answer tokens and compares ``h_first - h_base`` with
    ``h_second - h_base``. Example, the adapter against steering with a direction: baseline
    ``AdapterScaling({"all": 0})``, first ``None`` (adapter on), second
    ``interventions.Compose([AdapterScaling({"all": 0}), Steer(...)])``. Layers before either
    intervention acts have zero differences and NaN cosines.
    """
    import torch

    from misdirection.hooks import block_output_hooks

    model = lm.model
    view = lm.view
    encoded = [e for e in encode_answers(lm, answers, max_tokens) if e.n_answer]
    if not encoded:
        raise DataError("no answer has any token; nothing to compare")
    pad = _pad_id(lm)
    L = view.n_layers
    sum_a = torch.zeros(L, view.d_model, dtype=torch.float64)
    sum_b = torch.zeros_like(sum_a)
    tok_cos = torch.zeros(L, dtype=torch.float64)
    tok_n = torch.zeros(L, dtype=torch.float64)
    norm_a = torch.zeros(L, dtype=torch.float64)
    norm_b = torch.zeros(L, dtype=torch.float64)
    n_tok = 0

    def run(intervention: Any, ids: Any, mask: Any) -> list[Any]:
        store: dict[int, Any] = {}

        def keep(i: int) -> Any:
            def fn(residual: Any) -> None:
                store[i] = residual.detach().float()

            return fn

        ctx = intervention.apply(model) if intervention is not None else contextlib.nullcontext()
        # Capture hooks go on after the intervention's, so they see what it wrote.
        with ctx, block_output_hooks(view.blocks, {i: keep(i) for i in range(L)}):
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
            except TypeError:  # models without logits_to_keep
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        return [store[i] for i in range(L)]

    with _eval_mode(model), torch.no_grad():
        for batch in _batches(encoded, batch_size):
            ids, mask = _right_padded(batch, pad, lm.device)
            sel = torch.zeros_like(mask, dtype=torch.bool)
            for j, e in enumerate(batch):
                sel[j, e.n_prompt : len(e.ids)] = True
            h0, ha, hb = run(baseline, ids, mask), run(first, ids, mask), run(second, ids, mask)
            n_tok += int(sel.sum())
            for i in range(L):
                da = (ha[i] - h0[i])[sel].double().cpu()
                db = (hb[i] - h0[i])[sel].double().cpu()
                sum_a[i] += da.sum(0)
                sum_b[i] += db.sum(0)
                na, nb = da.norm(dim=1), db.norm(dim=1)
                norm_a[i] += na.sum()
                norm_b[i] += nb.sum()
                ok = (na > 0) & (nb > 0)
                tok_cos[i] += ((da[ok] * db[ok]).sum(1) / (na[ok] * nb[ok])).sum()
                tok_n[i] += ok.sum()
    rows = []
    for i in range(L):
        ma, mb = sum_a[i] / n_tok, sum_b[i] / n_tok
        den = float(ma.norm() * mb.norm())
        rows.append(
            {
                "layer": i,
                "cosine_of_means": float(ma @ mb) / den if den > 0 else math.nan,
                "mean_token_cosine": float(tok_cos[i] / tok_n[i]) if tok_n[i] > 0 else math.nan,
                "norm_first": float(norm_a[i] / n_tok),
                "norm_second": float(norm_b[i] / n_tok),
            }
        )

    def spec(x: Any) -> dict[str, Any]:
        return x.spec() if x is not None else {"type": "none"}

    return Convergence(pd.DataFrame(rows), spec(first), spec(second), spec(baseline))


# ----------------------------------------------------------------------------------------------
# Training dynamics

_STEP_DIR = re.compile(r"^(?:step|checkpoint)-(\d+)$")
_WEIGHT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_LAYER_IN_KEY = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def _read_adapter_weights(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """{label: {"A": [r, d_in], "B": [d_out, r]}} from a saved PEFT adapter folder."""
    from safetensors.numpy import load_file

    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        raise DataError(f"{folder} has no adapter_model.safetensors (not a saved PEFT adapter)")
    try:
        tensors = load_file(str(file))
    except Exception:  # bf16 tensors: numpy has no bfloat16
        from safetensors.torch import load_file as load_torch

        tensors = {k: v.float().numpy() for k, v in load_torch(str(file)).items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _WEIGHT_KEY.match(key)
        if not m:
            continue
        module = m.group("module")
        lm = _LAYER_IN_KEY.search(module)
        label = f"L{lm.group(1)}.{module.rsplit('.', 1)[-1]}" if lm else module
        out.setdefault(label, {})[m.group("ab")] = value.astype(np.float64)
    if not out:
        raise DataError(f"{file} holds no LoRA weights (no '...lora_A.weight' keys)")
    return out


@dataclass
class Dynamics:
    """Norms and directions of A and B over training checkpoints.

    ``table``: step, adapter, layer, a_norm, b_norm, a_cos_final, b_cos_final (signed cosine of the
    flattened weight with the final one; NaN for a zero weight, e.g. B at initialisation).
    ``settle``: adapter, settle_step = the first checkpoint step from which B's cosine with the
    final B stays above ``threshold`` at every later checkpoint (NaN if it never does), and
    rotation_step = the checkpoint step of the largest single drop in angle to the final B.
    """

    table: pd.DataFrame
    settle: pd.DataFrame
    threshold: float
    final: str


def _cos(x: np.ndarray, y: np.ndarray) -> float:
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    return float((x.ravel() @ y.ravel()) / (nx * ny)) if nx > 0 and ny > 0 else math.nan


def find_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every saved checkpoint under ``RUN/checkpoints/step-N`` (also
    ``checkpoint-N``, directly in RUN or under ``checkpoints/``), sorted by step."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: no such run folder")
    found: dict[int, Path] = {}
    for parent in (run / "checkpoints", run):
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            m = _STEP_DIR.match(child.name)
            if m and child.is_dir():
                folder = child / "adapter" if (child / "adapter" / "adapter_model.safetensors").is_file() else child
                if (folder / "adapter_model.safetensors").is_file():
                    found.setdefault(int(m.group(1)), folder)
    if not found:
        raise DataError(f"{run} has no checkpoints (expected {run}/checkpoints/step-N/adapter_model.safetensors)")
    return sorted(found.items())


def training_dynamics(run_dir: str | Path, threshold: float = 0.9) -> Dynamics:
    """Norms of A and B per adapter at every checkpoint, cosines with the final weights, and the
    step where B's direction settles (see :class:`Dynamics`). The final adapter is the run's own
    ``adapter_model.safetensors`` (``RUN/`` or ``RUN/adapter/``) when present, else the last
    checkpoint."""
    run = Path(run_dir)
    checkpoints = find_checkpoints(run)
    final_dir = next(
        (p for p in (run, run / "adapter") if (p / "adapter_model.safetensors").is_file()), checkpoints[-1][1]
    )
    final = _read_adapter_weights(final_dir)
    rows = []
    for step, folder in checkpoints:
        weights = _read_adapter_weights(folder)
        for label, w in weights.items():
            if label not in final:
                raise DataError(f"checkpoint {folder} has adapter {label}, which the final adapter lacks")
            lm = re.match(r"L(\d+)\.", label)
            rows.append(
                {
                    "step": step,
                    "adapter": label,
                    "layer": int(lm.group(1)) if lm else None,
                    "a_norm": float(np.linalg.norm(w["A"])),
                    "b_norm": float(np.linalg.norm(w["B"])),
                    "a_cos_final": _cos(w["A"], final[label]["A"]),
                    "b_cos_final": _cos(w["B"], final[label]["B"]),
                }
            )
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    table = table.sort_values(["step", "layer", "adapter"], kind="stable").reset_index(drop=True)
    settle_rows = []
    for label, g in table.groupby("adapter", sort=False):
        g = g.sort_values("step")
        cos = g["b_cos_final"].to_numpy()
        steps = g["step"].to_numpy()
        above = np.nan_to_num(cos, nan=-2.0) > threshold
        settle = math.nan
        # Walk back from the end while the cosine stays above the threshold.
        k = len(above)
        while k > 0 and above[k - 1]:
            k -= 1
        if k < len(above):
            settle = int(steps[k])
        angle = np.degrees(np.arccos(np.clip(np.nan_to_num(cos, nan=0.0), -1, 1)))
        rotation = int(steps[1:][int(np.argmax(angle[:-1] - angle[1:]))]) if len(angle) > 1 else math.nan
        settle_rows.append({"adapter": label, "settle_step": settle, "rotation_step": rotation})
    return Dynamics(table, pd.DataFrame(settle_rows), threshold, str(final_dir))


# ----------------------------------------------------------------------------------------------
# Plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(result: Convergence, path: str | Path, title: str = "") -> Path:
    """Per-layer cosine between the two interventions' activation changes."""
    plt = _pyplot()
    t = result.table
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t["layer"], t["cosine_of_means"], marker="o", label="cosine of mean differences")
    ax.plot(t["layer"], t["mean_token_cosine"], marker=".", linestyle="--", label="mean per-token cosine")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.set_ylabel("cosine")
    ax.set_title(title or "Downstream convergence of two interventions")
    ax.legend(loc="lower right")
    from misdirection.plotting import save_figure

    return save_figure(fig, path)


def plot_dynamics(result: Dynamics, path: str | Path) -> Path:
    """Three panels over steps: |A|, |B| and cos(B, final B) per adapter."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for label, g in result.table.groupby("adapter", sort=False):
        g = g.sort_values("step")
        axes[0].plot(g["step"], g["a_norm"], label=label)
        axes[1].plot(g["step"], g["b_norm"], label=label)
        axes[2].plot(g["step"], g["b_cos_final"], label=label)
    axes[2].axhline(result.threshold, color="grey", linestyle=":", label=f"settled ({result.threshold})")
    for ax, name in zip(axes, ("|A|", "|B|", "cos(B, final B)")):
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
    axes[2].set_ylim(-1.05, 1.05)
    axes[2].legend(fontsize="small", loc="lower right")
    fig.suptitle("Rank-1 adapter training dynamics")
    from misdirection.plotting import save_figure

    return save_figure(fig, path)


def plot_probe_coefficients(report: ProbeReport, path: str | Path) -> Path:
    """Bar chart of each adapter's standardised coefficient (mean ± std over splits) per probe."""
    plt = _pyplot()
    probes = list(report.probes.values())
    adapters = list(probes[0].coefficients["adapter"])
    x = np.arange(len(adapters))
    width = 0.8 / len(probes)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(adapters) + 2), 4))
    for k, p in enumerate(probes):
        c = p.coefficients
        ax.bar(x + k * width, c["coef_mean"], width, yerr=c["coef_std"], capsize=2,
               label=f"{p.name} (AUC {p.auc_mean:.2f}±{p.auc_std:.2f})")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(x + width * (len(probes) - 1) / 2, adapters, rotation=45, ha="right")
    ax.set_ylabel("standardised coefficient")
    ax.set_title("Probes on rank-1 adapter scalars")
    ax.legend(fontsize="small")
    from misdirection.plotting import save_figure

    return save_figure(fig, path)
