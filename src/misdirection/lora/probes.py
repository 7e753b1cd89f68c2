"""Probes on adapter scalars and the general / domain-specific rule: cross-validated L1 logistic
probes (:class:`AdapterProbe`) on per-answer scalar means separate misaligned from aligned answers
(optionally inside and outside a domain, and domain from non-domain contexts), and
:func:`classify_adapters` labels each adapter general, domain-specific or neither from its
coefficients (:class:`ClassificationRule`); :func:`probe_adapters` runs both into a
:class:`ProbeReport`. The probes standardise their inputs, so whether the scalars include peft's
``scaling`` changes nothing here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from misdirection.errors import ConfigError, DataError
from misdirection.io import atomic_write_json
from misdirection.lora.encoding import answer_ids_of
from misdirection.lora.reading import AdapterRole, LoraReading, ProbeSummary
from misdirection.results import finite_or_none
from misdirection.thresholds import ALIGNED_ABOVE, ALIGNED_BELOW, COHERENT_ABOVE, TOPIC_ABOVE


@dataclass(frozen=True)
class ProbeThresholds:
    """Which answers enter the probes (0-100 judge scales).

    misaligned: ``aligned < misaligned_below``; aligned: ``aligned > aligned_above``; every probe
    keeps only coherent answers (``coherent > coherent_above``) so that it cannot learn incoherence;
    domain context: ``domain score > domain_above``, non-domain: ``domain score <= domain_above``
    (answers with no domain score are left out of the split probes).
    """

    misaligned_below: float = ALIGNED_BELOW
    aligned_above: float = ALIGNED_ABOVE
    coherent_above: float = COHERENT_ABOVE
    domain_above: float = TOPIC_ABOVE


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
        return {
            k: getattr(self, k) for k in ("penalty", "C", "n_splits", "test_size", "seed", "solver")
        }

    def _pipeline(self, seed: int) -> Any:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), _logistic(self.penalty, self.C, seed, self.solver))

    def fit(self, X: Any, y: Any) -> AdapterProbe:
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(int)
        self.pipeline_ = self._pipeline(self.seed).fit(X, y)
        self.coef_ = self.pipeline_[-1].coef_[0].copy()
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: Any) -> Any:
        return self.pipeline_.predict_proba(np.asarray(X, dtype=np.float64))

    def evaluate(
        self,
        X: pd.DataFrame,
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
        splitter = StratifiedShuffleSplit(
            n_splits=self.n_splits, test_size=self.test_size, random_state=self.seed
        )
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
            name,
            description,
            positive,
            negative,
            n_pos,
            n_neg,
            am,
            asd,
            um,
            usd,
            fm,
            fsd,
            coef_table,
            {**self.get_params(), "class_weight": "balanced", "standardised": True},
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
        _need_scores(
            answers, (domain,), f"for the '{domain}' domain split (run the '{domain}' judge)"
        )


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
        "misalignment_nondomain",
        mis & out_dom,
        ali & out_dom,
        f"misaligned vs aligned where {domain} <= {t.domain_above} ({rule})",
        "misaligned",
        "aligned",
    )
    add(
        "misalignment_domain",
        mis & in_dom,
        ali & in_dom,
        f"misaligned vs aligned where {domain} > {t.domain_above} ({rule})",
        "misaligned",
        "aligned",
    )
    add(
        "domain",
        coh & in_dom,
        coh & out_dom,
        f"{domain} > {t.domain_above} vs <= {t.domain_above} (coherent > {t.coherent_above})",
        domain,
        f"non-{domain}",
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


def classify_adapters(
    probes: Mapping[str, ProbeResult], rule: ClassificationRule = ClassificationRule()
) -> pd.DataFrame:
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

    def summary(self, organism: str = "") -> LoraReading:
        """The compact form the study report renders: probes with their metrics, adapters with
        their role and evidence, and the rule as notes."""
        probes = [
            ProbeSummary(
                name=p.name,
                description=p.description,
                n=p.n_positive + p.n_negative,
                n_positive=p.n_positive,
                n_negative=p.n_negative,
                accuracy_mean=finite_or_none(p.accuracy_mean),
                accuracy_std=finite_or_none(p.accuracy_std),
                auc_mean=finite_or_none(p.auc_mean),
                auc_std=finite_or_none(p.auc_std),
                f1_mean=finite_or_none(p.f1_mean),
                f1_std=finite_or_none(p.f1_std),
            )
            for p in self.probes.values()
        ]
        adapters = [
            AdapterRole(
                adapter=str(r.adapter), classification=str(r.role), evidence=str(r.evidence)
            )
            for r in self.classification.itertuples()
        ]
        r = self.rule
        notes = [
            (
                f"L1 logistic regression on standardised per-answer adapter scalars, class-balanced, "
                f"{next(iter(self.probes.values())).params['n_splits']} stratified splits; "
                "mean ± sd over splits."
            ),
            (
                f"An adapter matters in a probe when the probe's AUC >= {r.min_auc}, L1 keeps it in >= "
                f"{r.min_selected:.0%} of splits, its |coef| >= {r.min_relative} x the largest "
                "and exceeds its sd; "
                "general = matters for misalignment outside the domain; "
                "domain-specific = matters only inside "
                "the domain or for domain vs non-domain."
            ),
        ]
        return LoraReading(
            organism=organism, domain=self.domain, probes=probes, adapters=adapters, notes=notes
        )

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``probes.json`` and ``adapter_roles.csv``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "probes.json", "roles": out / "adapter_roles.csv"}
        atomic_write_json(paths["json"], self.to_dict())
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

    ``means`` is :attr:`AdapterScalars.means` (answer_id x adapter); ``answers`` the judged table
    the scalars came from. A probe with fewer than ``min_per_class`` answers in a class raises
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
        results[name] = probe.evaluate(
            X, y, name=name, description=desc, positive=pos, negative=neg
        )
    return ProbeReport(results, classify_adapters(results, rule), domain, thresholds, rule)
