"""The evaluation engine: every condition is sampled, judged and summarised here, once.

A *condition* is a model (the base, or the base with an adapter) under an optional intervention,
sampled on a question set with fixed settings and judged by one judge. Its identity is its inputs:
model, adapter, the intervention's ``spec()`` (file paths dropped where a content hash stands
beside them, so a moved run folder keeps its cache), the questions' hash, the sampling settings and
the judge. The engine caches both stages in a :class:`~misdirection.store.RunStore`:

* ``sample/<name>`` writes one Parquet chunk per group of questions (answers are seeded per answer,
  so chunks do not depend on one another) and skips finished chunks after an interruption;
* ``judge/<name>`` judges a copy of the answers in place, chunk by chunk, skipping scored rows.

``misdirection evaluate``, ``sweep``, ``transfer``, layer selection and studies all run their
conditions through :class:`Engine` and compare them with :func:`misdirection.effects.compare`, so
the same answers give the same numbers and the same verdicts everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from misdirection.backends import BackendName, SamplingBackend, make_backend
from misdirection.effects import compare
from misdirection.errors import ConfigError
from misdirection.metrics import Summary, Thresholds, summarize
from misdirection.protocols import Intervention, Judge
from misdirection.results import (
    ConditionKind,
    ConditionResult,
    Effect,
    EffectKind,
    EffectPolicy,
    Example,
    Share,
    finite_or_none,
)
from misdirection.store import RunStore, Stage

if TYPE_CHECKING:
    from misdirection.judge.base import Rubric
    from misdirection.models import LoadedModel
    from misdirection.protocols import LanguageModel

#: Rubrics the EM summary needs.
REQUIRED_RUBRICS = ("aligned", "coherent")


@dataclass(frozen=True)
class SamplingSettings:
    """How answers are drawn: per paraphrase (None: each question's own count), budget, seed.

    ``backend``: what decodes them (:mod:`misdirection.backends`); ``backend_options``: that
    backend's options (for ``vllm``: those of :class:`misdirection.backends.vllm.VLLMBackend`).
    """

    samples_per_paraphrase: int | None = None
    max_new_tokens: int = 64
    temperature: float = 1.0
    batch_size: int = 32
    seed: int = 0
    backend: BackendName = "hf"
    backend_options: Mapping[str, Any] = field(default_factory=dict)


def identity(spec: Any) -> Any:
    """An intervention spec as a cache identity: a path beside a content hash is not identity."""
    if isinstance(spec, Mapping):
        drop_path = "sha256" in spec
        return {k: identity(v) for k, v in spec.items() if not (drop_path and k == "path")}
    if isinstance(spec, list | tuple):
        return [identity(v) for v in spec]
    return spec


def _field(q: Any, name: str, default: Any = None) -> Any:
    return q.get(name, default) if isinstance(q, Mapping) else getattr(q, name, default)


def questions_sha256(questions: Iterable[Any]) -> str:
    """Hash of what sampling reads from the questions (ids, paraphrases, system prompts, counts)."""
    items = [
        [
            str(_field(q, "id")),
            [str(p) for p in _field(q, "paraphrases") or []],
            _field(q, "system") or "",
            _field(q, "samples_per_paraphrase", 1),
        ]
        for q in questions
    ]
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def question_prompts(questions: Iterable[Any]) -> dict[str, dict[str, str]]:
    """``{question id: judge_prompts}`` of the items that carry their own judge prompts."""
    return {
        str(_field(q, "id")): dict(_field(q, "judge_prompts"))
        for q in questions
        if _field(q, "judge_prompts")
    }


def resolve_judge(judge: Judge | str | None, **options: object) -> Judge:
    """A Judge object as is; a spec string through :func:`get_judge`; None -> :func:`default_judge`."""
    from misdirection.judge import default_judge, get_judge

    if judge is None:
        return default_judge()
    if isinstance(judge, str):
        return get_judge(judge, **options)
    # Callers without a type checker: a wrong object fails here, before any answer is sampled.
    if not isinstance(judge, Judge) or not callable(judge.score) or not isinstance(judge.name, str):
        raise ConfigError(
            f"judge must be a spec string or have .name and .score(); got {type(judge).__name__}"
        )
    return judge


def check_intervention(lm: LanguageModel, intervention: Intervention | None) -> None:
    """Install and remove ``intervention`` once: layers, widths and adapter selections fail here."""
    if intervention is None:
        return
    # Callers without a type checker: a wrong object fails here, before any answer is sampled.
    if (
        not isinstance(intervention, Intervention)
        or not callable(intervention.apply)
        or not callable(intervention.spec)
    ):
        raise ConfigError(
            "an intervention needs spec() -> dict and apply(model) -> context manager"
        )
    with intervention.apply(lm.model):
        pass


#: A chunk holds up to this many batches of answers: the sampler refills freed rows within a chunk,
#: so only a chunk's last wave runs part-empty, while a resumed run loses at most one chunk's work.
CHUNK_BATCHES = 4


def _question_chunks(questions: list[Any], n: int | None, batch_size: int) -> list[list[Any]]:
    """Consecutive questions grouped into chunks of at most ``CHUNK_BATCHES`` batches of answers.

    A question never straddles chunks (one with more answers than that is a chunk of its own).
    Chunks used to close at the first question that filled a batch, so 24-answer questions at
    batch 64 made chunks of 72: a full batch, then 8 rows decoded alone for the whole answer
    length. The grouping depends only on the settings, and answers are seeded per answer, so the
    grouping does not change them.
    """
    limit = CHUNK_BATCHES * batch_size
    groups: list[list[Any]] = [[]]
    rows = 0
    for question in questions:
        per = n if n is not None else int(_field(question, "samples_per_paraphrase", 1))
        size = len(_field(question, "paraphrases") or []) * per
        if groups[-1] and rows + size > limit:
            groups.append([])
            rows = 0
        groups[-1].append(question)
        rows += size
    return [g for g in groups if g]


def _chunk_name(index: int, group: list[Any]) -> str:
    """A chunk's file name: its index and the hash of its questions, so that a run resumed under
    another batch size (another grouping) re-samples its chunks instead of mixing groupings."""
    return f"{index:04d}-{questions_sha256(group)[:12]}.parquet"


def condition_result(
    name: str,
    kind: ConditionKind,
    table: pd.DataFrame,
    summary: Summary,
    *,
    key: str,
    model: str,
    adapter: str,
    organism: str | None,
    intervention: dict[str, Any] | None,
    judge: str,
    table_path: str = "",
) -> ConditionResult:
    """The typed record of one judged condition."""
    from misdirection.judge.scoring import flag_counts

    return ConditionResult(
        name=name,
        kind=kind,
        key=key,
        model=model,
        adapter=adapter,
        organism=organism,
        intervention=intervention,
        judge=judge,
        n=summary.n,
        em=Share.of(summary.em),
        coherent=Share.of(summary.coherent),
        misaligned_coherent=Share.of(summary.misaligned_coherent),
        misaligned=None if summary.misaligned is None else Share.of(summary.misaligned),
        topics={k: Share.of(v) for k, v in summary.topics.items()},
        n_null_aligned=summary.n_null_aligned,
        n_null_coherent=summary.n_null_coherent,
        judge_flags={"n": len(table), **flag_counts(table, "aligned")},
        table=table_path,
        summary=summary.to_dict(),
    )


class Engine:
    """Runs conditions of one base model, question set, sampling settings and judge, cached.

    ``store``: a RunStore or folder (the cache; a temporary folder when None, gone with the engine).
    ``adapters``: ``{organism: (adapter folder or Hub id, identity key)}`` for conditions named by
    organism. ``log``: called with one line per stage.
    """

    def __init__(
        self,
        model: LanguageModel,
        questions: Iterable[Any],
        judge: Judge | str | None,
        *,
        store: RunStore | str | Path | None = None,
        sampling: SamplingSettings = SamplingSettings(),
        rubrics: Sequence[str | Rubric] = REQUIRED_RUBRICS,
        custom_rubrics: Mapping[str, Rubric] | None = None,
        use_question_prompts: bool = True,
        thresholds: Thresholds = Thresholds(),
        policy: EffectPolicy | None = None,
        chunk_size: int = 64,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from misdirection.judge.rubrics import resolve_rubrics

        self.model = model
        self.questions = list(questions)
        if not self.questions:
            raise ConfigError("the question set is empty")
        self.judge = resolve_judge(judge)
        names = [r if isinstance(r, str) else getattr(r, "name", "") for r in rubrics]
        missing = [r for r in REQUIRED_RUBRICS if r not in names]
        if missing:
            raise ConfigError(
                f"the EM summary needs rubrics {', '.join(REQUIRED_RUBRICS)}; missing {', '.join(missing)}"
            )
        self.rubrics = resolve_rubrics(list(rubrics), custom_rubrics)  # unknown rubric: fail now
        self.prompts = question_prompts(self.questions) if use_question_prompts else None
        self.sampling = sampling
        self.thresholds = thresholds
        self.policy = policy or EffectPolicy()
        self.chunk_size = chunk_size
        self.progress = progress
        self._log = log
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="misdirection-engine-")
            store = self._tmp.name
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.adapters: dict[str, tuple[str, str]] = {}
        self.results: dict[str, ConditionResult] = {}
        self._backend: SamplingBackend | None = None

    @property
    def backend(self) -> SamplingBackend:
        """The sampling backend, built on first use (vLLM loads its model then, once)."""
        if self._backend is None:
            self._backend = make_backend(self.sampling.backend, self.sampling.backend_options)
        return self._backend

    # ------------------------------------------------------------------ models
    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def add_adapter(self, organism: str, adapter: str, key: str | None = None) -> None:
        """Register an organism's adapter (``key``: what identifies it; default its path)."""
        self.adapters[organism] = (adapter, key or adapter)

    @contextlib.contextmanager
    def model_for(self, organism: str | None) -> Iterator[LanguageModel]:
        """The base model, or the base with an organism's adapter attached (removed on exit)."""
        from misdirection.models import adapter_attached

        if organism is None:
            yield self.model
            return
        if organism not in self.adapters:
            raise ConfigError(
                f"unknown organism {organism!r} (known: {', '.join(sorted(self.adapters)) or 'none'})"
            )
        # Attaching swaps the base's ``.model`` for the peft-wrapped one and back, which a
        # LoadedModel allows (the LanguageModel protocol reads it only).
        base = cast("LoadedModel", self.model)
        with adapter_attached(base, self.adapters[organism][0]) as lm:
            yield lm

    def check(self, intervention: Intervention | None, organism: str | None = None) -> None:
        """Install and remove an intervention on the model it will run on: fails before sampling."""
        with self.model_for(organism) as lm:
            check_intervention(lm, intervention)

    # ------------------------------------------------------------------ stages
    def _model_identity(self, organism: str | None) -> dict[str, Any]:
        from misdirection.models import model_dtype_identity

        return {
            "model": str(self.model.spec),
            "model_adapter": str(self.model.adapter_spec or ""),
            "organism": None if organism is None else self.adapters[organism][1],
            **model_dtype_identity(self.model),
        }

    def sample_stage(
        self,
        name: str,
        organism: str | None,
        intervention: Intervention | None,
        samples_per_paraphrase: int | None,
        seed_offset: int = 0,
    ) -> Stage:
        """Sample (or reuse) the answers of one condition; resumable chunk by chunk.

        ``seed_offset``: a different draw of the same condition (more answers for extraction)."""
        from misdirection.sample import write_answers

        s = self.sampling
        n = samples_per_paraphrase or s.samples_per_paraphrase
        stage = self.store.stage(
            f"sample/{name}",
            {
                **self._model_identity(organism),
                "intervention": None if intervention is None else identity(intervention.spec()),
                "questions": questions_sha256(self.questions),
                "n": n,
                "max_new_tokens": s.max_new_tokens,
                "temperature": s.temperature,
                "seed": s.seed + seed_offset,
                **self.backend.identity(),
            },
        )
        if stage.done:
            return stage
        stage.start()
        chunks = stage.dir / "chunks"
        chunks.mkdir(exist_ok=True)
        groups = _question_chunks(self.questions, n, s.batch_size)
        self.log(f"sampling {name}: {len(self.questions)} questions, {len(groups)} chunks")
        with self.model_for(organism) as lm:
            for index, group in enumerate(groups):
                path = chunks / _chunk_name(index, group)
                if path.is_file():
                    continue  # finished before an interruption
                df = self.backend.sample(
                    lm,
                    group,
                    n,
                    max_new_tokens=s.max_new_tokens,
                    seed=s.seed + seed_offset,
                    batch_size=s.batch_size,
                    temperature=s.temperature,
                    intervention=intervention,
                    progress=self.progress and len(groups) == 1,
                )
                write_answers(df, str(path))  # atomic: a killed run never leaves half a chunk
        table = pd.concat(
            [pd.read_parquet(chunks / _chunk_name(i, g)) for i, g in enumerate(groups)],
            ignore_index=True,
        )
        write_answers(table, str(stage.dir / "answers.parquet"))
        stage.finish({"rows": len(table)})
        return stage

    def judge_stage(self, name: str, sampled: Stage) -> Stage:
        """Judge (or reuse) a sampled condition; judging resumes in place."""
        from misdirection.io import atomic_write_bytes
        from misdirection.judge.scoring import judge_table

        stage = self.store.stage(
            f"judge/{name}",
            {
                "sample": sampled.key,
                "judge": self.judge.name,
                "rubrics": [r.name or str(r) for r in self.rubrics],
                "rubric_prompts": hashlib.sha256(
                    json.dumps([r.prompt for r in self.rubrics], sort_keys=True).encode()
                ).hexdigest(),
                "question_prompts": self.prompts or {},
            },
        )
        judged = stage.dir / "judged.parquet"
        if not stage.done:
            stage.start()
            if not judged.is_file():
                atomic_write_bytes(judged, (sampled.dir / "answers.parquet").read_bytes())
            self.log(f"judging {name} with {self.judge.name}")
            judge_table(
                judged,
                self.judge,
                self.rubrics,
                question_prompts=self.prompts,
                chunk_size=self.chunk_size,
                progress=self.progress,
            )
            stage.finish({"judge": self.judge.name})
        return stage

    # ------------------------------------------------------------------ conditions
    def run(
        self,
        name: str,
        kind: ConditionKind = "evaluate",
        *,
        organism: str | None = None,
        intervention: Intervention | None = None,
        samples_per_paraphrase: int | None = None,
        seed_offset: int = 0,
    ) -> ConditionResult:
        """Sample, judge and summarise one condition (each stage reused when cached)."""
        self.check(intervention, organism)
        sampled = self.sample_stage(
            name, organism, intervention, samples_per_paraphrase, seed_offset
        )
        judged = self.judge_stage(name, sampled)
        path = judged.dir / "judged.parquet"
        table = pd.read_parquet(path)
        summary = summarize(table, thresholds=self.thresholds, label=name)
        ident = self._model_identity(organism)
        result = condition_result(
            name,
            kind,
            table,
            summary,
            key=judged.key,
            model=ident["model"],
            adapter=(
                self.adapters[organism][0] if organism is not None else ident["model_adapter"]
            ),
            organism=organism,
            intervention=None if intervention is None else intervention.spec(),
            judge=self.judge.name,
            table_path=str(path.relative_to(self.store.root)),
        )
        self.results[name] = result
        em, coh = result.em, result.coherent
        self.log(
            f"  {name}: EM {100 * (em.value or 0):.1f}% [{100 * (em.low or 0):.1f}, "
            f"{100 * (em.high or 0):.1f}], coherent {100 * (coh.value or 0):.1f}%"
        )
        return result

    def table(self, result: ConditionResult | str) -> pd.DataFrame:
        """The judged answers of a condition run by this engine."""
        name = result if isinstance(result, str) else result.name
        return pd.read_parquet(self.store.root / self.results[name].table)

    def examples(self, kinds: Sequence[str], per_condition: int = 2) -> list[Example]:
        """The least and most aligned scored answers of each condition of the given kinds."""
        out = []
        half = max(1, per_condition // 2)
        for record in self.results.values():
            if record.kind not in kinds:
                continue
            df = self.table(record).dropna(subset=["aligned"]).sort_values("aligned")
            if df.empty:
                continue
            for row in pd.concat([df.head(half), df.tail(half)]).itertuples():
                out.append(
                    Example(
                        condition=record.name,
                        question=str(row.question),
                        answer=str(row.answer),
                        aligned=finite_or_none(getattr(row, "aligned", None)),
                        coherent=finite_or_none(getattr(row, "coherent", None)),
                    )
                )
        return out

    def effect(
        self,
        before: ConditionResult,
        after: ConditionResult,
        *,
        name: str,
        kind: EffectKind,
        controls: Sequence[ConditionResult] = (),
        control_kind: str = "isotropic",
        settings: dict[str, Any] | None = None,
    ) -> Effect:
        """:func:`misdirection.effects.compare` under this engine's policy."""
        return compare(
            before,
            after,
            name=name,
            kind=kind,
            controls=controls,
            control_kind=control_kind,
            policy=self.policy,
            settings=settings,
        )
