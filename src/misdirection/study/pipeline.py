"""Run a whole study from its config: train, sample, judge, extract, intervene, compare, report.

Every condition is sampled and judged by the evaluation engine (:class:`misdirection.engine.Engine`)
in the run folder, cached by the hash of its inputs (see :mod:`.store`), so a re-run does only what
changed and a run killed at any moment resumes where it stopped: training resumes from the
trainer's last checkpoint, sampling skips finished chunks, judging skips scored rows.

Every intervention (steering, ablation, transfer, adapter scaling, B-vector ablation) becomes an
:class:`misdirection.results.Effect` with its coherence and its random controls, judged by the one
rule set in :mod:`misdirection.effects`; ``results.json`` is a
:class:`misdirection.results.StudyResults`.

All configuration errors that need no model are raised when the config is parsed; layer indices,
datasets, question sets, adapters and the judge are checked right after the base model loads,
before any training or sampling.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from rich.console import Console

from misdirection.engine import Engine, SamplingSettings
from misdirection.errors import ConfigError, MisdirectionError
from misdirection.evaluate import intervention_effect
from misdirection.io import atomic_write_text
from misdirection.metrics import Thresholds
from misdirection.models import (
    LoadedModel,
    dtype_name,
    load_model,
    looks_like_hub_id,
    model_dtype_identity,
)
from misdirection.provenance import library_versions
from misdirection.reliability import samples_path
from misdirection.results import ConditionResult, Effect, EffectPolicy, StudyResults
from misdirection.store import RunStore, stable_hash
from misdirection.study.config import StudyConfig, validate_against_model


@dataclass
class Direction:
    """An organism's extracted direction, what identifies it, and its answers' activations."""

    directions: Any  # DirectionSet
    key: str
    samples: Any = None  # DirectionSamples, for noise ceilings and variance-matched controls
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyState:
    """What a running study has produced so far (conditions live in the engine)."""

    training: list[dict[str, Any]] = field(default_factory=list)
    directions: dict[str, Direction] = field(default_factory=dict)
    base_direction: Direction | None = None
    effects: list[Effect] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
        self.policy = EffectPolicy(max_coherence_drop=config.judging.max_coherence_drop)
        self.state = StudyState()
        self.base: LoadedModel | None = None
        self.dtype = ""  # the base model's, once loaded
        self._engine: Engine | None = None

    # ------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        self.console.print(f"[bold cyan]>[/] {message}")

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the study's engine exists only after check()")
        return self._engine

    def _questions(self) -> list[Any]:
        from misdirection.data.questions import load_questions

        items: list[Any] = []
        for name in self.config.sampling.questions:
            items.extend(load_questions(name).items)
        return items

    def condition(self, name: str) -> ConditionResult:
        return self.engine.results[name]

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Everything that can fail cheaply, before any expensive work."""
        from misdirection.backends import make_backend
        from misdirection.data.chat import load_chat_dataset
        from misdirection.judge import default_judge, get_judge
        from misdirection.train import get_recipe

        config = self.config
        try:  # a missing vllm or a bad backend option fails before any training
            make_backend(config.sampling.backend, config.sampling.backend_options)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: sampling: {exc}") from exc
        self.base = load_model(config.base_model, dtype=config.dtype)
        self.dtype = dtype_name(next(self.base.model.parameters()).dtype)
        self.log(f"loaded base model {config.base_model} in {self.dtype} (dtype: {config.dtype})")
        validate_against_model(config, self.base.view.n_layers, self.source)
        questions = self._questions()  # raises on unknown set or malformed file
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
        spec = config.judging.judge
        judge = default_judge() if spec == "auto" else get_judge(spec)
        sampling = config.sampling
        self._engine = Engine(
            self.base,
            questions,
            judge,
            store=self.store,
            sampling=SamplingSettings(
                samples_per_paraphrase=sampling.samples_per_paraphrase,
                max_new_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                batch_size=sampling.batch_size,
                seed=config.seed,
                backend=sampling.backend,
                backend_options=dict(sampling.backend_options),
            ),
            rubrics=list(config.judging.rubrics),
            use_question_prompts=False,
            thresholds=self.thresholds,
            policy=self.policy,
            chunk_size=config.judging.chunk_size,
            progress=self.progress,
            log=self.log,
        )

    # ------------------------------------------------------------------ stages
    def train_all(self) -> None:
        from misdirection.data.chat import load_chat_dataset
        from misdirection.train import RUN_CARD, train_organism

        for org in self.config.organisms:
            if org.adapter:
                self.engine.add_adapter(
                    org.name, org.adapter, stable_hash({"adapter": org.adapter})
                )
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
                    **model_dtype_identity(self.engine.model),
                },
            )
            out = stage.dir / "adapter"
            if not stage.done:
                self.log(f"training organism {org.name} ({org.train.recipe} on {org.train.data})")
                stage.start()
                if not (out / RUN_CARD).is_file():
                    assert self.base is not None, "check() loads the base model first"
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
            self.state.training.append(stage.result())
            self.engine.add_adapter(org.name, str(out), stage.key)

    def extract(self, organism: str | None) -> None:
        """The mean-diff direction of an organism's answers (``None``: of the base model's)."""
        from misdirection.directions import DirectionSet, SetThresholds, extract_directions
        from misdirection.reliability import DirectionSamples

        spec = self.config.extract
        assert spec is not None
        name = organism or "base"
        judged = self.condition(name)
        stage = self.store.stage(
            f"extract/{name}",
            {"judged": judged.key, "settings": spec.model_dump(), "seed": self.config.seed},
        )
        path = stage.dir / "directions.safetensors"
        if not stage.done:
            stage.start()
            table = self.engine.table(judged)
            thresholds = SetThresholds(
                aligned_above=spec.aligned_above,
                misaligned_below=spec.misaligned_below,
                coherent_above=spec.coherent_above,
            )
            self.log(f"extracting the mean-diff direction of {name}")
            try:
                with self.engine.model_for(organism) as lm, warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # small sets are reported in the results
                    ds, samples = extract_directions(
                        lm,
                        table,
                        thresholds=thresholds,
                        balance=spec.balance,
                        min_per_set=spec.min_per_set,
                        seed=self.config.seed,
                        source=self.store.root / judged.table,
                        progress=self.progress,
                    )
                ds.save(path)
                samples.save(samples_path(path))
                stage.finish({"path": str(path.relative_to(self.store.root))})
            except MisdirectionError as exc:
                # Too few misaligned answers is a result (a null), not a crash: record and go on.
                stage.finish({"error": str(exc)})
        result = stage.result()
        if "error" in result:
            self.state.notes.append(f"No direction for {name}: {result['error']}")
            self.log(f"[yellow]no direction for {name}[/]: {result['error']}")
            return
        ds = DirectionSet.load(path)
        samples = DirectionSamples.load(samples_path(path))
        n_mis, n_al = int(samples.misaligned.shape[0]), int(samples.aligned.shape[0])
        small = min(n_mis, n_al) < spec.warn_below
        summary = {
            "organism": name,
            "path": str(path.relative_to(self.store.root)),
            "n_misaligned": n_mis,
            "n_aligned": n_al,
            "split_half": [_float(v) for v in ds.metadata.get("split_half", [])],
            "warning": (
                f"only {n_mis} misaligned and {n_al} aligned answers (fewer than warn_below="
                f"{spec.warn_below} in a set): this direction is mostly noise; read its cosines "
                "against its noise ceiling"
                if small
                else None
            ),
        }
        direction = Direction(ds, stage.key, samples, summary)
        if organism is None:
            self.state.base_direction = direction
        else:
            self.state.directions[organism] = direction

    # ------------------------------------------------------------------ analyses
    def run_steering(self) -> None:
        from misdirection.interventions import Steer

        spec = self.config.steering
        if spec is None:
            return
        if spec.direction not in self.state.directions:
            self.state.notes.append(f"Steering skipped: {spec.direction} has no direction.")
            return
        ds = self.state.directions[spec.direction].directions
        base = self.condition("base")
        for layer in spec.layers:
            for scale in spec.scales:
                self.state.effects.append(
                    intervention_effect(
                        self.engine,
                        Steer(ds, layers=[layer], scale=scale),
                        name=f"steer-{spec.direction}-L{layer}-x{scale:g}",
                        kind="steer",
                        condition_kind="steer",
                        before=base,
                        controls=spec.random_controls,
                        first_control_seed=self.config.seed,
                        control_kind="isotropic",
                        samples_per_paraphrase=spec.samples_per_paraphrase,
                        settings={"direction": spec.direction, "layer": layer, "scale": scale},
                    )
                )

    def run_ablation(self) -> None:
        from misdirection.interventions import Ablate

        spec = self.config.ablation
        if spec is None:
            return
        if spec.direction not in self.state.directions:
            self.state.notes.append(f"Ablation skipped: {spec.direction} has no direction.")
            return
        d = self.state.directions[spec.direction]
        source_layer = (
            spec.source_layer if spec.source_layer is not None else d.directions.n_layers // 2
        )
        activations = _stacked(d.samples) if spec.control_kind == "variance-matched" else None
        for target in spec.targets:
            for mode in spec.modes:
                single = source_layer if mode == "single" else None
                self.state.effects.append(
                    intervention_effect(
                        self.engine,
                        Ablate(d.directions, "all", mode, single),
                        name=f"ablate-{spec.direction}-from-{target}-{mode}",
                        kind="ablate" if target == spec.direction else "transfer",
                        condition_kind="ablate",
                        organism=target,
                        before=self.condition(target),
                        controls=spec.random_controls,
                        first_control_seed=self.config.seed,
                        control_kind=spec.control_kind,
                        activations=activations,
                        settings={
                            "direction": spec.direction,
                            "target": target,
                            "mode": mode,
                            "source_layer": single,
                        },
                    )
                )

    def run_cosine(self) -> dict[str, Any] | None:
        from misdirection.directions import cosine_per_layer
        from misdirection.reliability import bootstrap_cosine, ceiling

        names = [n for n in self.config.cosine if n in self.state.directions]
        if len(names) < 2:
            if self.config.cosine:
                self.state.notes.append(
                    "Cosine comparison skipped: fewer than two organisms have a direction."
                )
            return None
        stage = self.store.stage(
            "cosine",
            {
                "directions": {n: self.state.directions[n].key for n in names},
                "seed": self.config.seed,
            },
        )
        if not stage.done:
            stage.start()
            pairs = []
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    da, db = self.state.directions[a], self.state.directions[b]
                    _, low, high = bootstrap_cosine(da.samples, db.samples, seed=self.config.seed)
                    rel_a = np.asarray(da.summary["split_half"], dtype=float)
                    rel_b = np.asarray(db.summary["split_half"], dtype=float)
                    pairs.append(
                        {
                            "a": a,
                            "b": b,
                            "per_layer": _floats(cosine_per_layer(da.directions, db.directions)),
                            "low": _floats(low),
                            "high": _floats(high),
                            "ceiling": _floats(ceiling(rel_a, rel_b)),
                        }
                    )
            stage.finish({"pairs": pairs})
        return {
            "organisms": names,
            "pairs": stage.result()["pairs"],
            "note": (
                "ceiling = sqrt(reliability A x reliability B), the cosine two directions would "
                "show if their true directions were identical, given the noise of each "
                "(split-half reliability, Spearman-Brown corrected); intervals resample answers"
            ),
        }

    def run_lora(self) -> dict[str, Any] | None:
        spec = self.config.lora
        if spec is None:
            return None
        from misdirection import lora

        stage = self.store.stage(
            f"lora/{spec.organism}",
            {
                "judged": self.condition(spec.organism).key,
                "settings": spec.model_dump(exclude={"scale_adapters", "ablate_b", "b_controls"}),
                "direction": (
                    self.state.directions[spec.organism].key
                    if spec.organism in self.state.directions
                    else None
                ),
                "seed": self.config.seed,
            },
        )
        if not stage.done:
            stage.start()
            table = self.engine.table(spec.organism)
            self.log(f"probing the rank-1 adapters of {spec.organism}")
            try:
                with self.engine.model_for(spec.organism) as lm:
                    scalars = lora.adapter_scalars(lm, table, progress=self.progress)
                    report = lora.probe_adapters(
                        scalars.means,
                        table,
                        domain=spec.domain,
                        probe=lora.AdapterProbe(seed=self.config.seed),
                    )
                    b_cos = None
                    if spec.organism in self.state.directions:
                        b_cos = lora.b_direction_cosines(
                            lm.model, self.state.directions[spec.organism].directions.directions
                        )
                result = report.summary()
                if b_cos is not None:
                    result["b_cosines"] = b_cos.to_dict(orient="records")
                stage.finish(result)
            except MisdirectionError as exc:
                stage.finish({"error": str(exc)})
        # A probe that cannot be fitted (too few answers per class) is a null result; the
        # interventions on the adapters below do not depend on it.
        result = dict(stage.result())
        before = self.condition(spec.organism)
        for item in spec.scale_adapters:
            name = f"scale-{spec.organism}-{item.replace('=', 'x').replace(',', '_')}"
            self.state.effects.append(
                intervention_effect(
                    self.engine,
                    lora.AdapterScaling.from_strings([item]),
                    name=name,
                    kind="adapter-scaling",
                    condition_kind="adapter-scaling",
                    organism=spec.organism,
                    before=before,
                    settings={"scale_adapters": item},
                )
            )
        if spec.ablate_b:
            if spec.organism not in self.state.directions:
                self.state.notes.append(
                    f"B-vector ablation skipped: {spec.organism} has no direction."
                )
            else:
                self.state.effects.append(
                    intervention_effect(
                        self.engine,
                        lora.BVectorAblation(self.state.directions[spec.organism].directions),
                        name=f"ablate-b-{spec.organism}",
                        kind="ablate-b",
                        condition_kind="ablate-b",
                        organism=spec.organism,
                        before=before,
                        controls=spec.b_controls,
                        first_control_seed=self.config.seed,
                        control_kind="isotropic",
                        settings={"direction": spec.organism},
                    )
                )
        return result

    def run_geometry(self) -> dict[str, Any] | None:
        spec = self.config.geometry
        if spec is None:
            return None
        if len(self.state.directions) < 2:
            self.state.notes.append("Geometry skipped: fewer than two directions were extracted.")
            return None
        from misdirection.geometry import run_suite

        layer = (
            spec.layer
            if spec.layer is not None
            else next(iter(self.state.directions.values())).directions.n_layers // 2
        )
        base = self.state.base_direction
        groups = spec.groups or self._recipe_groups()
        stage = self.store.stage(
            "geometry",
            {
                "directions": {k: d.key for k, d in sorted(self.state.directions.items())},
                "base": None if base is None else base.key,
                "groups": groups,
                "layer": layer,
                "null_draws": spec.null_draws,
                "seed": self.config.seed,
            },
        )
        if not stage.done:
            stage.start()
            directions = self.state.directions
            vectors = {name: d.directions.layer(layer).numpy() for name, d in directions.items()}
            self.log(f"geometry of {len(vectors)} directions at layer {layer}")
            run_suite(
                vectors,
                out_dir=stage.dir,
                n_null=spec.null_draws,
                seed=self.config.seed,
                layers={name: layer for name in vectors},
                layer_stacks={
                    name: d.directions.directions.numpy() for name, d in directions.items()
                },
                # Figure 3: each direction against the base model's own, grouped by procedure.
                base_vectors=(
                    None
                    if base is None
                    else {name: base.directions.directions.numpy() for name in vectors}
                ),
                groups=groups if base is not None else None,
                thresholds=self.thresholds,
            )
            figures = sorted(
                str(p.relative_to(self.store.root)) for p in stage.dir.glob("**/*.png")
            )
            summary_md = stage.dir / "summary.md"
            stage.finish(
                {
                    "layer": layer,
                    "figures": figures,
                    "summary_markdown": summary_md.read_text() if summary_md.is_file() else "",
                }
            )
        if base is None:
            self.state.notes.append(
                "Geometry: no base-model direction (extract.base), so no similarity to the base "
                "direction (Figure 3)."
            )
            return stage.result()
        return {**stage.result(), "base_ceilings": self._base_ceilings(base, layer, groups)}

    def run_defence(self) -> dict[str, Any] | None:
        """Training-time defences, monitor and screening (:mod:`misdirection.training_time.stage`)."""
        from misdirection.training_time.stage import run_defence_stage

        result = run_defence_stage(self)
        return None if result is None else result.model_dump(mode="json")

    def _base_ceilings(
        self, base: Direction, layer: int, groups: Mapping[str, Sequence[str]]
    ) -> list[dict[str, Any]]:
        """Each direction's cosine to the base direction at ``layer`` beside its noise ceiling.

        Figure 3's cosines are cosines between two noisy directions like any other: without the
        ceiling a low value cannot be told from noise (cheap: recomputed on every run).
        """
        from misdirection.directions import cosine_per_layer
        from misdirection.reliability import bootstrap_cosine, ceiling

        group_of = {m: g for g, members in groups.items() for m in members}
        rel_base = np.asarray(base.summary.get("split_half") or [np.nan], dtype=float)
        rows = []
        for name, d in sorted(self.state.directions.items()):
            cos = float(cosine_per_layer(d.directions, base.directions)[layer])
            low = high = None
            if d.samples is not None and base.samples is not None:
                _, lo, hi = bootstrap_cosine(d.samples, base.samples, seed=self.config.seed)
                low, high = float(lo[layer]), float(hi[layer])
            rel = np.asarray(d.summary.get("split_half") or [np.nan], dtype=float)
            ceil = (
                float(ceiling(rel, rel_base)[layer])
                if rel.shape == rel_base.shape and rel.size > layer
                else None
            )
            rows.append(
                {
                    "vector": name,
                    "group": group_of.get(name, "ungrouped"),
                    "layer": layer,
                    "cosine": cos,
                    "low": low,
                    "high": high,
                    "ceiling": None if ceil is None or math.isnan(ceil) else ceil,
                }
            )
        return rows

    def _recipe_groups(self) -> dict[str, list[str]]:
        """Organisms with a direction, grouped by how they were made (recipe or 'given adapter')."""
        groups: dict[str, list[str]] = {}
        for org in self.config.organisms:
            if org.name in self.state.directions:
                label = org.train.recipe if org.train else "given adapter"
                groups.setdefault(label, []).append(org.name)
        return groups

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
        self.engine.run("base", "base")
        for org in config.organisms:
            self.engine.run(org.name, "organism", organism=org.name)
        if config.extract:
            if config.extract.base:
                self.extract(None)
            for name in config.extract.organisms:
                self.extract(name)
        self.run_steering()
        self.run_ablation()
        cosine = self.run_cosine()
        lora_result = self.run_lora()
        geometry = self.run_geometry()
        defence = self.run_defence()
        judge = self.engine.judge
        conditions = list(self.engine.results.values())
        results = StudyResults(
            study=config.name,
            base_model=config.base_model,
            seed=config.seed,
            created=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            config=config.model_dump(mode="json"),
            config_yaml=yaml.safe_dump(
                config.model_dump(mode="json", exclude_defaults=False), sort_keys=False
            ),
            versions=library_versions(),
            dtype=self.dtype,
            judge={
                "name": judge.name,
                "rubrics": list(config.judging.rubrics),
                "notice": _judge_notice(judge.name),
                "flags": _total_flags(conditions),
                "provenance": {
                    f"{r} scores of every condition": judge.name for r in config.judging.rubrics
                },
            },
            policy=self.policy,
            training=self.state.training,
            conditions=conditions,
            effects=self.state.effects,
            directions=[
                d.summary
                for d in [self.state.base_direction, *self.state.directions.values()]
                if d is not None
            ],
            cosine=cosine,
            lora=lora_result,
            geometry=geometry,
            defence=defence,
            examples=self._examples(),
            notes=self.state.notes,
            seconds=round(time.time() - start, 1),
        )
        path = self.store.root / "results.json"
        results.total_seconds = round(results.seconds + _earlier_seconds(path), 1)
        atomic_write_text(path, results.model_dump_json(indent=2))
        self.store.set_info(finished=time.time())
        return path

    def _examples(self, per_condition: int = 2) -> list[dict[str, Any]]:
        """The least and most aligned scored answers of the base model and each organism."""
        out = []
        for record in self.engine.results.values():
            if record.kind not in ("base", "organism"):
                continue
            df = self.engine.table(record).dropna(subset=["aligned"])
            if df.empty:
                continue
            df = df.sort_values("aligned")
            for _, row in pd.concat(
                [df.head(per_condition // 2 or 1), df.tail(per_condition // 2 or 1)]
            ).iterrows():
                out.append(
                    {
                        "condition": record.name,
                        "question": row["question"],
                        "answer": row["answer"],
                        "aligned": _float(row.get("aligned")),
                        "coherent": _float(row.get("coherent")),
                    }
                )
        return out


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
        "dtype": card.get("dtype", "float32"),
        "seconds": card.get("wall_time_s", 0.0),
        "losses": card.get("losses", []),
        "heldout_loglik_before": card.get("heldout_loglik_before", float("nan")),
        "heldout_loglik_after": card.get("heldout_loglik_after", float("nan")),
    }


def _total_flags(conditions: list[ConditionResult]) -> dict[str, int]:
    """Judge flags summed over every judged condition (``n``: answers judged)."""
    total: dict[str, int] = {}
    for record in conditions:
        for kind, count in record.judge_flags.items():
            total[kind] = total.get(kind, 0) + int(count)
    return total


def _floats(values: Any) -> list[float | None]:
    return [_float(v) for v in np.asarray(values, dtype=float).tolist()]


def _stacked(samples: Any) -> Any:
    import torch

    return torch.cat([samples.misaligned, samples.aligned])


def _judge_notice(name: str) -> str:
    if name.startswith("learned"):
        from misdirection.judge.learned import agreement_notice

        return agreement_notice()
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


def _earlier_seconds(path: Path) -> float:
    """The total time of the earlier runs of a run folder, from its last results.json (0 if none)."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0.0
    total = earlier.get("total_seconds")
    return float(total if total is not None else earlier.get("seconds") or 0.0)
