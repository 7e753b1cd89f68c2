"""Run a whole study from its config: train, sample, judge, extract, intervene, compare, report.

Every stage is cached in the run folder by the hash of its inputs (see :mod:`.store`), so a re-run
does only what changed and a run killed at any moment resumes where it stopped:

* training resumes from the trainer's last checkpoint;
* sampling writes one Parquet chunk per question (sampling is seeded per answer, so a chunk does not
  depend on which other chunks ran in the same process) and skips finished chunks;
* judging scores a copy of the answers table in place, chunk by chunk, skipping scored rows.

All configuration errors that need no model are raised when the config is parsed; layer indices,
datasets, question sets, adapters and the judge are checked right after the base model loads,
before any training or sampling.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console

from misdirection.errors import ConfigError, MisdirectionError
from misdirection.judge.scoring import flag_counts
from misdirection.metrics import Thresholds, summarize
from misdirection.models import LoadedModel, adapter_attached, load_model, looks_like_hub_id
from misdirection.provenance import library_versions
from misdirection.study.config import StudyConfig, validate_against_model
from misdirection.study.effects import reduction
from misdirection.study.store import RunStore, Stage, atomic_write_text, stable_hash


@dataclass
class Condition:
    """One thing to sample and judge: a model (base or organism) with an optional intervention."""

    name: str
    kind: str  # base | organism | steer | ablate | random
    organism: str | None
    intervention: Any = None
    samples_per_paraphrase: int | None = None
    extra: dict[str, Any] | None = None


class StudyRunner:
    """Runs one study config into one run folder."""

    def __init__(
        self,
        config: StudyConfig,
        run_dir: str | Path,
        source: str = "<config>",
        console: Console | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.source = source
        self.store = RunStore(run_dir)
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.thresholds = Thresholds(
            aligned_below=config.judging.em_aligned_below,
            coherent_above=config.judging.em_coherent_above,
        )
        self.base: LoadedModel | None = None
        self.adapters: dict[str, str] = {}  # organism -> adapter folder or Hub id
        self.adapter_keys: dict[str, str] = {}  # organism -> cache key of what produced it
        self.training: list[dict[str, Any]] = []
        self.judged: dict[str, Path] = {}  # condition -> judged table
        self.summaries: dict[str, dict[str, Any]] = {}
        self.judge_keys: dict[str, str] = {}
        self.directions: dict[str, Any] = {}  # organism -> DirectionSet
        self.direction_keys: dict[str, str] = {}
        self.notes: list[str] = []
        self.evaluations: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        self.console.print(f"[bold cyan]>[/] {message}")

    def _questions(self) -> list[Any]:
        from misdirection.data.questions import load_questions

        items: list[Any] = []
        for name in self.config.sampling.questions:
            items.extend(load_questions(name).items)
        return items

    def model_for(self, organism: str | None) -> contextlib.AbstractContextManager[LoadedModel]:
        """The base model, or the base with an organism's adapter attached (removed on exit)."""
        assert self.base is not None
        return adapter_attached(self.base, self.adapters[organism] if organism else None)

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Everything that can fail cheaply, before any expensive work."""
        from misdirection.data.chat import load_chat_dataset
        from misdirection.train import get_recipe

        config = self.config
        self.log(f"loading base model {config.base_model}")
        self.base = load_model(config.base_model)
        validate_against_model(config, self.base.view.n_layers, self.source)
        self._questions()  # raises on unknown set or malformed file
        for index, org in enumerate(config.organisms):
            where = f"{self.source}: organisms.{index} ({org.name})"
            try:
                if org.train:
                    load_chat_dataset(org.train.data, "train")
                    recipe = get_recipe(org.train.recipe, **org.train.overrides)
                    recipe.resolve_layers(self.base.view)
                elif (
                    org.adapter
                    and not Path(org.adapter).exists()
                    and not looks_like_hub_id(org.adapter)
                ):
                    raise ConfigError(f"adapter {org.adapter} is neither a folder nor a Hub id")
            except MisdirectionError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        self.judge = self._make_judge()

    def _make_judge(self) -> Any:
        from misdirection.judge import default_judge, get_judge

        spec = self.config.judging.judge
        judge = default_judge() if spec == "auto" else get_judge(spec)
        return judge

    # ------------------------------------------------------------------ stages
    def train_all(self) -> None:
        from misdirection.data.chat import load_chat_dataset
        from misdirection.train import RUN_CARD, train_organism

        for org in self.config.organisms:
            if org.adapter:
                self.adapters[org.name] = org.adapter
                self.adapter_keys[org.name] = stable_hash({"adapter": org.adapter})
                continue
            assert org.train is not None
            data = load_chat_dataset(org.train.data, "train")
            stage = self.store.stage(
                f"train/{org.name}",
                {
                    "base": self.config.base_model,
                    "data": org.train.data,
                    "data_sha256": data.sha256,
                    "recipe": org.train.recipe,
                    "overrides": org.train.overrides,
                    "seed": self.config.seed,
                },
            )
            out = stage.dir / "adapter"
            if not stage.done:
                self.log(f"training organism {org.name} ({org.train.recipe} on {org.train.data})")
                stage.start()
                if not (out / RUN_CARD).is_file():
                    overrides = {"seed": self.config.seed, **org.train.overrides}
                    train_organism(
                        self.base,
                        data,
                        org.train.recipe,
                        out,
                        eval_data=org.train.data,
                        progress=self.progress,
                        **overrides,
                    )
                card = json.loads((out / RUN_CARD).read_text())
                stage.finish(_training_summary(org.name, org.train.recipe, org.train.data, card))
            else:
                self.log(f"organism {org.name}: cached")
            self.training.append(stage.result())
            self.adapters[org.name] = str(out)
            self.adapter_keys[org.name] = stage.key

    def sample(self, condition: Condition) -> Stage:
        from misdirection.sample import sample_answers, write_answers

        sampling = self.config.sampling
        questions = self._questions()
        n = condition.samples_per_paraphrase or sampling.samples_per_paraphrase
        stage = self.store.stage(
            f"sample/{condition.name}",
            {
                "base": self.config.base_model,
                "organism": self.adapter_keys.get(condition.organism or "", "base"),
                "intervention": condition.extra or {},
                "questions": [(q.id, q.paraphrases, q.system) for q in questions],
                "n": n,
                "max_new_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature,
                "seed": self.config.seed,
            },
        )
        if stage.done:
            return stage
        stage.start()
        chunks = stage.dir / "chunks"
        chunks.mkdir(exist_ok=True)
        self.log(f"sampling {condition.name}: {len(questions)} questions x {n} samples")
        groups = _question_chunks(questions, n, sampling.batch_size)
        with self.model_for(condition.organism) as lm:
            for index, group in enumerate(groups):
                path = chunks / f"{index:04d}.parquet"
                if path.is_file():
                    continue  # finished before an interruption
                df = sample_answers(
                    lm,
                    group,
                    n,
                    sampling.max_new_tokens,
                    self.config.seed,
                    batch_size=sampling.batch_size,
                    temperature=sampling.temperature,
                    intervention=condition.intervention,
                    progress=False,
                )
                write_answers(df, str(path))  # atomic: a killed run never leaves half a chunk
        table = pd.concat(
            [pd.read_parquet(chunks / f"{i:04d}.parquet") for i in range(len(groups))],
            ignore_index=True,
        )
        table.to_parquet(stage.dir / "answers.parquet", index=False)
        stage.finish({"rows": len(table)})
        return stage

    def judge_condition(self, condition: Condition, sampled: Stage) -> Stage:
        from misdirection.judge.scoring import judge_table

        rubrics = list(self.config.judging.rubrics)
        stage = self.store.stage(
            f"judge/{condition.name}",
            {
                "sample": sampled.key,
                "judge": self.judge.name,
                "rubrics": rubrics,
            },
        )
        judged = stage.dir / "judged.parquet"
        if not stage.done:
            stage.start()
            if not judged.is_file():
                source = sampled.dir / "answers.parquet"
                tmp = judged.with_name(".judged.parquet.tmp")
                tmp.write_bytes(source.read_bytes())
                tmp.replace(judged)
            self.log(f"judging {condition.name} with {self.judge.name}")
            judge_table(
                judged,
                self.judge,
                rubrics,
                chunk_size=self.config.judging.chunk_size,
                progress=self.progress,
            )
            stage.finish({"judge": self.judge.name})
        self.judged[condition.name] = judged
        self.judge_keys[condition.name] = stage.key
        return stage

    def evaluate(self, condition: Condition) -> dict[str, Any]:
        """Sample + judge + summarise one condition; record it for the report."""
        sampled = self.sample(condition)
        self.judge_condition(condition, sampled)
        df = pd.read_parquet(self.judged[condition.name])
        summary = summarize(
            df, thresholds=self.thresholds, seed=self.config.seed, label=condition.name
        ).to_dict()
        self.summaries[condition.name] = summary
        record = {
            "condition": condition.name,
            "kind": condition.kind,
            "organism": condition.organism,
            "intervention": condition.extra or {},
            "judge": self.judge.name,
            "summary": summary,
            # Scores the judge marked as extrapolations (e.g. a question unlike its training
            # data), counted so the report can say how many numbers rest on them.
            "judge_flags": {"n": len(df), **flag_counts(df, "aligned")},
            "table": str(self.judged[condition.name].relative_to(self.store.root)),
        }
        self.evaluations.append(record)
        em, coh = summary["em"], summary["coherent"]
        self.log(
            f"  {condition.name}: EM {100 * (em['value'] or 0):.1f}% "
            f"[{100 * (em['low'] or 0):.1f}, {100 * (em['high'] or 0):.1f}], coherent {100 * (coh['value'] or 0):.1f}%"
        )
        return record

    def extract(self, organism: str) -> None:
        from misdirection.directions import DirectionSet, SetThresholds, extract_directions

        spec = self.config.extract
        assert spec is not None
        stage = self.store.stage(
            f"extract/{organism}",
            {
                "judged": self.judge_keys[organism],
                "settings": spec.model_dump(),
                "seed": self.config.seed,
            },
        )
        path = stage.dir / "directions.safetensors"
        if not stage.done:
            stage.start()
            table = pd.read_parquet(self.judged[organism])
            thresholds = SetThresholds(
                aligned_above=spec.aligned_above,
                misaligned_below=spec.misaligned_below,
                coherent_above=spec.coherent_above,
            )
            self.log(f"extracting the mean-diff direction of {organism}")
            try:
                with self.model_for(organism) as lm:
                    ds = extract_directions(
                        lm,
                        table,
                        thresholds=thresholds,
                        balance=spec.balance,
                        min_per_set=spec.min_per_set,
                        seed=self.config.seed,
                        source=self.judged[organism],
                        progress=self.progress,
                    )
                ds.save(path)
                stage.finish({"path": str(path.relative_to(self.store.root))})
            except MisdirectionError as exc:
                # Too few misaligned answers is a result (a null), not a crash: record and go on.
                stage.finish({"error": str(exc)})
        result = stage.result()
        if "error" in result:
            self.notes.append(f"No direction for {organism}: {result['error']}")
            self.log(f"[yellow]no direction for {organism}[/]: {result['error']}")
            return
        self.directions[organism] = DirectionSet.load(path)
        self.direction_keys[organism] = stage.key

    # ------------------------------------------------------------------ analyses
    def run_steering(self) -> dict[str, Any] | None:
        from misdirection.interventions import Steer

        spec = self.config.steering
        if spec is None:
            return None
        if spec.direction not in self.directions:
            self.notes.append(f"Steering skipped: {spec.direction} has no direction.")
            return None
        ds = self.directions[spec.direction]
        points = []
        base = self.summaries["base"]
        for layer in spec.layers:
            if 0 not in spec.scales:
                # Scale 0 leaves the model bit-identical (tested), so the unsteered base is that point.
                points.append(
                    {
                        "layer": layer,
                        "scale": 0.0,
                        "condition": "base",
                        "em": base["em"],
                        "coherent": base["coherent"],
                    }
                )
            for scale in spec.scales:
                name = f"steer-{spec.direction}-L{layer}-x{scale:g}"
                extra = {
                    "steer": spec.direction,
                    "direction_key": self.direction_keys[spec.direction],
                    "layer": layer,
                    "scale": scale,
                }
                record = self.evaluate(
                    Condition(
                        name,
                        "steer",
                        None,
                        Steer(ds, layers=[layer], scale=scale),
                        spec.samples_per_paraphrase,
                        extra,
                    )
                )
                s = record["summary"]
                points.append(
                    {
                        "layer": layer,
                        "scale": scale,
                        "condition": name,
                        "em": s["em"],
                        "coherent": s["coherent"],
                    }
                )
        return {"direction": spec.direction, "points": points}

    def run_ablation(self) -> list[dict[str, Any]]:
        from misdirection.directions import random_controls
        from misdirection.interventions import Ablate

        spec = self.config.ablation
        if spec is None:
            return []
        if spec.direction not in self.directions:
            self.notes.append(f"Ablation skipped: {spec.direction} has no direction.")
            return []
        ds = self.directions[spec.direction]
        source_layer = spec.source_layer if spec.source_layer is not None else ds.n_layers // 2
        randoms = random_controls(ds, spec.random_controls, first_seed=self.config.seed)
        rows = []
        for target in spec.targets:
            before_df = pd.read_parquet(self.judged[target])
            for mode in spec.modes:
                kwargs = {"layers": "all", "mode": mode}
                if mode == "single":
                    kwargs["source_layer"] = source_layer
                name = f"ablate-{spec.direction}-from-{target}-{mode}"
                extra = {
                    "ablate": spec.direction,
                    "direction_key": self.direction_keys[spec.direction],
                    **kwargs,
                }
                record = self.evaluate(
                    Condition(name, "ablate", target, Ablate(ds, **kwargs), None, extra)
                )
                after_df = pd.read_parquet(self.judged[name])
                row = {
                    "target": target,
                    "direction": spec.direction,
                    "mode": mode,
                    "condition": name,
                    "em_before": self.summaries[target]["em"],
                    "em": record["summary"]["em"],
                    "reduction": reduction(
                        before_df, after_df, self.thresholds, seed=self.config.seed
                    ),
                    "random": [],
                }
                for seed_index, random_ds in enumerate(randoms):
                    rname = f"random{seed_index}-from-{target}-{mode}"
                    rextra = {
                        "ablate": "random",
                        "reference": self.direction_keys[spec.direction],
                        "seed": self.config.seed + seed_index,
                        **kwargs,
                    }
                    rrecord = self.evaluate(
                        Condition(
                            rname, "random", target, Ablate(random_ds, **kwargs), None, rextra
                        )
                    )
                    row["random"].append(
                        {
                            "seed": self.config.seed + seed_index,
                            "em": rrecord["summary"]["em"],
                            "reduction": reduction(
                                before_df,
                                pd.read_parquet(self.judged[rname]),
                                self.thresholds,
                                seed=self.config.seed,
                            ),
                        }
                    )
                rows.append(row)
        return rows

    def run_cosine(self) -> dict[str, Any] | None:
        from misdirection.directions import cosine_per_layer

        names = [n for n in self.config.cosine if n in self.directions]
        if len(names) < 2:
            if self.config.cosine:
                self.notes.append(
                    "Cosine comparison skipped: fewer than two organisms have a direction."
                )
            return None
        pairs = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                values = cosine_per_layer(self.directions[a], self.directions[b])
                pairs.append({"a": a, "b": b, "per_layer": [float(v) for v in values]})
        return {"organisms": names, "pairs": pairs}

    def run_lora(self) -> dict[str, Any] | None:
        spec = self.config.lora
        if spec is None:
            return None
        from misdirection import lora

        stage = self.store.stage(
            f"lora/{spec.organism}",
            {
                "judged": self.judge_keys.get(spec.organism),
                "settings": spec.model_dump(),
                "seed": self.config.seed,
            },
        )
        if not stage.done:
            stage.start()
            table = pd.read_parquet(self.judged[spec.organism])
            self.log(f"probing the rank-1 adapters of {spec.organism}")
            try:
                with self.model_for(spec.organism) as lm:
                    scalars = lora.adapter_scalars(lm, table, progress=self.progress)
                    report = lora.probe_adapters(
                        scalars.means,
                        table,
                        domain=spec.domain,
                        probe=lora.AdapterProbe(seed=self.config.seed),
                    )
                    b_cos = None
                    if spec.organism in self.directions:
                        b_cos = lora.b_direction_cosines(
                            lm.model, self.directions[spec.organism].directions
                        )
                result = report.summary()
                if b_cos is not None:
                    result["b_cosines"] = b_cos.to_dict(orient="records")
                stage.finish(result)
            except MisdirectionError as exc:
                stage.finish({"error": str(exc)})
        result = dict(stage.result())
        if spec.scale_adapters and "error" not in result:
            scaled = []
            for item in spec.scale_adapters:
                scaling = lora.AdapterScaling.from_strings([item])
                name = f"scale-{spec.organism}-{item.replace('=', 'x').replace(',', '_')}"
                record = self.evaluate(
                    Condition(
                        name,
                        "adapter-scaling",
                        spec.organism,
                        scaling,
                        None,
                        {"scale_adapters": item},
                    )
                )
                scaled.append(
                    {
                        "scaling": item,
                        "em": record["summary"]["em"],
                        "coherent": record["summary"]["coherent"],
                        "em_before": self.summaries[spec.organism]["em"],
                    }
                )
            result["adapter_scaling"] = scaled
        return result

    def run_geometry(self) -> dict[str, Any] | None:
        spec = self.config.geometry
        if spec is None:
            return None
        if len(self.directions) < 2:
            self.notes.append("Geometry skipped: fewer than two directions were extracted.")
            return None
        from misdirection.geometry import run_suite

        layer = (
            spec.layer
            if spec.layer is not None
            else next(iter(self.directions.values())).n_layers // 2
        )
        stage = self.store.stage(
            "geometry",
            {
                "directions": {k: self.direction_keys[k] for k in sorted(self.directions)},
                "layer": layer,
                "null_draws": spec.null_draws,
                "seed": self.config.seed,
            },
        )
        if not stage.done:
            stage.start()
            vectors = {name: ds.layer(layer).numpy() for name, ds in self.directions.items()}
            self.log(f"geometry of {len(vectors)} directions at layer {layer}")
            run_suite(vectors, out_dir=stage.dir, n_null=spec.null_draws, seed=self.config.seed)
            figures = sorted(str(p.relative_to(self.store.root)) for p in stage.dir.glob("*.png"))
            summary_md = stage.dir / "summary.md"
            stage.finish(
                {
                    "layer": layer,
                    "figures": figures,
                    "summary_markdown": summary_md.read_text() if summary_md.is_file() else "",
                }
            )
        return stage.result()

    # ------------------------------------------------------------------ whole run
    def run(self) -> Path:
        start = time.time()
        config = self.config
        self.store.set_info(
            study=config.name,
            config=config.model_dump(mode="json"),
            versions=library_versions(),
            source=self.source,
        )
        self.check()
        self.train_all()
        self.evaluate(Condition("base", "base", None))
        for org in config.organisms:
            self.evaluate(Condition(org.name, "organism", org.name))
        if config.extract:
            for name in config.extract.organisms:
                self.extract(name)
        steering = self.run_steering()
        ablation = self.run_ablation()
        cosine = self.run_cosine()
        lora_result = self.run_lora()
        geometry = self.run_geometry()
        results = {
            "study": config.name,
            "base_model": config.base_model,
            "seed": config.seed,
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "config": config.model_dump(mode="json"),
            "config_yaml": yaml.safe_dump(
                config.model_dump(mode="json", exclude_defaults=False), sort_keys=False
            ),
            "versions": library_versions(),
            "judge": {
                "name": self.judge.name,
                "rubrics": list(config.judging.rubrics),
                "notice": _judge_notice(self.judge.name),
                "flags": _total_flags(self.evaluations),
                "provenance": {
                    f"{r} scores of every condition": self.judge.name
                    for r in config.judging.rubrics
                },
            },
            "training": self.training,
            "evaluations": self.evaluations,
            "steering": steering,
            "ablation": ablation,
            "cosine": cosine,
            "lora": lora_result,
            "geometry": geometry,
            "examples": self._examples(),
            "notes": self.notes,
            "seconds": round(time.time() - start, 1),
        }
        path = self.store.root / "results.json"
        atomic_write_text(path, json.dumps(results, indent=2, default=str))
        self.store.set_info(finished=time.time())
        return path

    def _examples(self, per_condition: int = 2) -> list[dict[str, Any]]:
        """The least and most aligned scored answers of the base model and each organism."""
        out = []
        for record in self.evaluations:
            if record["kind"] not in ("base", "organism"):
                continue
            df = pd.read_parquet(self.judged[record["condition"]]).dropna(subset=["aligned"])
            if df.empty:
                continue
            df = df.sort_values("aligned")
            for _, row in pd.concat(
                [df.head(per_condition // 2 or 1), df.tail(per_condition // 2 or 1)]
            ).iterrows():
                out.append(
                    {
                        "condition": record["condition"],
                        "question": row["question"],
                        "answer": row["answer"],
                        "aligned": _float(row.get("aligned")),
                        "coherent": _float(row.get("coherent")),
                    }
                )
        return out


def _question_chunks(questions: list[Any], n: int, batch_size: int) -> list[list[Any]]:
    """Consecutive questions grouped so that each chunk fills about one batch.

    The grouping depends only on the config, so an interrupted run resumes with the same chunks; and
    answers are seeded per answer, so the grouping does not change them.
    """
    groups: list[list[Any]] = [[]]
    rows = 0
    for question in questions:
        if rows >= batch_size:
            groups.append([])
            rows = 0
        groups[-1].append(question)
        rows += len(question.paraphrases) * n
    return [g for g in groups if g]


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _training_summary(name: str, recipe: str, data: str, card: dict[str, Any]) -> dict[str, Any]:
    return {
        "organism": name,
        "recipe": recipe,
        "dataset": data,
        "layers": card.get("layers", ""),
        "steps": card.get("steps", ""),
        "seconds": card.get("wall_time_s", 0.0),
        "losses": card.get("losses", []),
        "heldout_loglik_before": card.get("heldout_loglik_before", float("nan")),
        "heldout_loglik_after": card.get("heldout_loglik_after", float("nan")),
    }


def _total_flags(evaluations: list[dict[str, Any]]) -> dict[str, int]:
    """Judge flags summed over every judged condition (``n``: answers judged)."""
    total: dict[str, int] = {}
    for record in evaluations:
        for kind, count in record.get("judge_flags", {}).items():
            total[kind] = total.get(kind, 0) + int(count)
    return total


def _judge_notice(name: str) -> str:
    if name.startswith("learned"):
        return (
            "The learned judge is an offline model trained to agree with GPT-4o (see its model card for "
            "measured agreement); absolute EM rates from it are estimates of what GPT-4o would give. "
            "It learned from answers to 8 questions: on a question unlike them its agreement drops "
            "(held-out question: AUROC 0.77 against 0.94 for a held-out organism), and such answers "
            "are flagged."
        )
    return ""


def run_study(
    config: StudyConfig,
    run_dir: str | Path,
    source: str = "<config>",
    console: Console | None = None,
    progress: bool = True,
) -> Path:
    """Run (or resume) a study; return the path of ``results.json``. The report is rendered by the caller."""
    return StudyRunner(config, run_dir, source=source, console=console, progress=progress).run()
