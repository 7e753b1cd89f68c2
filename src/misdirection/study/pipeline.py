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
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console

from misdirection.directions import CosineComparison, DirectionSummary, compare_directions
from misdirection.engine import Engine, SamplingSettings
from misdirection.errors import ConfigError, MisdirectionError
from misdirection.evaluate import ablation_effects, intervention_effect, steer_effects
from misdirection.geometry.summary import GeometrySummary, base_ceilings
from misdirection.io import atomic_write_text
from misdirection.lora.reading import BCosine, LoraReading
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
from misdirection.results import ConditionResult, Effect, EffectPolicy, JudgeInfo
from misdirection.store import RunStore, stable_hash
from misdirection.study.config import StudyConfig, validate_against_model
from misdirection.study_results import StudyResults
from misdirection.train.summary import TrainingRun
from misdirection.training_time.stage import DefenceStageResult


@dataclass
class Direction:
    """An organism's extracted direction, what identifies it, and its answers' activations."""

    directions: Any  # DirectionSet
    key: str
    samples: Any  # DirectionSamples, for noise ceilings and variance-matched controls
    summary: DirectionSummary


@dataclass
class StudyState:
    """What a running study has produced so far (conditions live in the engine)."""

    training: list[TrainingRun] = field(default_factory=list)
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
        self._snapshots: dict[str, tuple[Any, str]] = {}
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
        from misdirection.train import RUN_CARD, AdapterSnapshots, train_organism

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
                    # Only curves add a key: organisms trained before keep their cache.
                    **({"curve_every": org.train.curve_every} if org.train.curve_every else {}),
                    **model_dtype_identity(self.engine.model),
                },
            )
            out = stage.dir / "adapter"
            snapshots = (
                AdapterSnapshots(org.train.curve_every, stage.dir / "curve")
                if org.train.curve_every
                else None
            )
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
                        on_step=snapshots,
                        **overrides,
                    )
                card = json.loads((out / RUN_CARD).read_text())
                run = TrainingRun.from_card(org.name, org.train.recipe, org.train.data, card)
                stage.finish(run.model_dump(mode="json"))
            else:
                self.log(f"organism {org.name}: cached")
            self.state.training.append(TrainingRun.model_validate(stage.result()))
            self.engine.add_adapter(org.name, str(out), stage.key)
            if snapshots is not None:
                self._snapshots[org.name] = (snapshots, stage.key)

    def run_curves(self) -> None:
        """EM, coherence and misalignment of each saved step of an organism (step 0: the base)."""
        from misdirection.train import CurvePoint

        base = self.condition("base")
        for run in self.state.training:
            if run.organism not in self._snapshots:
                continue
            snapshots, key = self._snapshots[run.organism]
            points = [(0, base)]
            for step in snapshots.steps():
                if run.steps is not None and step >= run.steps:
                    continue  # the final adapter is the organism itself
                name = f"{run.organism}@step-{step}"
                self.engine.add_adapter(
                    name, str(snapshots.folder / f"step-{step}"), stable_hash([key, step])
                )
                points.append((step, self.engine.run(name, "checkpoint", organism=name)))
            points.append((run.steps or 0, self.condition(run.organism)))
            run.curve = [
                CurvePoint(
                    step=step,
                    condition=c.name,
                    n=c.n,
                    em=c.em,
                    coherent=c.coherent,
                    misaligned=c.misaligned,
                    misaligned_coherent=c.misaligned_coherent,
                )
                for step, c in points
            ]

    def extract(self, organism: str | None) -> None:
        """The mean-diff direction of an organism's answers (``None``: of the base model's)."""
        from misdirection.directions import DirectionSet, SetThresholds, extract_directions
        from misdirection.reliability import DirectionSamples

        spec = self.config.extract
        assert spec is not None
        name = organism or "base"
        thresholds = SetThresholds(
            aligned_above=spec.aligned_above,
            misaligned_below=spec.misaligned_below,
            coherent_above=spec.coherent_above,
        )
        table, keys = self._extraction_answers(organism, thresholds)
        stage = self.store.stage(
            f"extract/{name}",
            {"judged": keys, "settings": spec.model_dump(), "seed": self.config.seed},
        )
        path = stage.dir / "directions.safetensors"
        if not stage.done:
            stage.start()
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
                        # One judged file is hashed whole; pooled rounds by their selected rows.
                        source=(
                            self.store.root / self.condition(name).table if len(keys) == 1 else None
                        ),
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
        rel = str(path.relative_to(self.store.root))
        summary = DirectionSummary.of(
            name, rel, ds, samples, spec.warn_below, seed=self.config.seed
        )
        direction = Direction(ds, stage.key, samples, summary)
        if organism is None:
            self.state.base_direction = direction
        else:
            self.state.directions[organism] = direction

    def _extraction_answers(
        self, organism: str | None, thresholds: Any
    ) -> tuple[pd.DataFrame, list[str]]:
        """The judged answers a direction is extracted from, and the keys that identify them.

        The condition's own answers; with ``target_per_set``, more rounds of the same condition
        (new seeds) until each set is large enough or ``max_answers`` is reached; with
        ``pool_aligned``, the aligned answers of the base model and the other organisms, their
        extraction rounds included (read through this organism's model at capture; their
        ``pooled_from`` says where they came from).
        """
        from misdirection.directions import select_sets

        spec = self.config.extract
        assert spec is not None
        name = organism or "base"
        own = self.condition(name)
        tables = [self.engine.table(own)]
        keys = [own.key]
        pooled = []
        if spec.pool_aligned:
            for other in self.engine.results.values():
                # Every other model's answers, their extraction rounds included (the reference
                # code pools every response file); this model's own rounds are drawn below.
                if (
                    other.kind not in ("base", "organism", "extract")
                    or other.name == name
                    or other.name.startswith(_round_prefix(name))
                ):
                    continue
                df = self.engine.table(other)
                rows = select_sets(df, thresholds).aligned
                pooled.append(
                    _tagged(df.iloc[rows], f"~{other.name}").assign(pooled_from=other.name)
                )
                keys.append(other.key)
        pool = pd.concat(pooled, ignore_index=True) if pooled else None
        cap = (
            spec.base_max_answers
            if organism is None and spec.base_max_answers is not None
            else spec.max_answers
        )
        round_ = 0
        while spec.target_per_set is not None:
            sel = select_sets(pd.concat(tables, ignore_index=True), thresholds)
            n_aligned = sel.n_aligned_available + (0 if pool is None else len(pool))
            answers = sum(len(t) for t in tables)
            if min(n_aligned, sel.n_misaligned_available) >= spec.target_per_set:
                break
            if answers >= cap:
                self.state.notes.append(
                    f"Extraction for {name} stopped at the cap of {cap} answers with "
                    f"{sel.n_misaligned_available} misaligned and {n_aligned} aligned answers "
                    f"(target {spec.target_per_set} per set)."
                )
                break
            round_ += 1
            extra = self.engine.run(
                f"{_round_prefix(name)}{round_}", "extract", organism=organism, seed_offset=round_
            )
            # The same answer ids come back with each seed: keep them apart.
            tables.append(_tagged(self.engine.table(extra), f"~r{round_}"))
            keys.append(extra.key)
        if pool is not None:
            tables.append(pool)
        return pd.concat(tables, ignore_index=True), keys

    # ------------------------------------------------------------------ analyses
    def run_steering(self) -> None:
        spec = self.config.steering
        if spec is None:
            return
        if spec.direction not in self.state.directions:
            self.state.notes.append(f"Steering skipped: {spec.direction} has no direction.")
            return
        self.state.effects += steer_effects(
            self.engine,
            self.state.directions[spec.direction].directions,
            spec.layers,
            spec.scales,
            self.condition("base"),
            prefix=f"steer-{spec.direction}",
            random_controls=spec.random_controls,
            first_control_seed=self.config.seed,
            samples_per_paraphrase=spec.samples_per_paraphrase,
            settings={"direction": spec.direction},
        )

    def run_ablation(self) -> None:
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
            own = target == spec.direction
            self.state.effects += ablation_effects(
                self.engine,
                d.directions,
                self.condition(target),
                target,
                source_layer,
                modes=spec.modes if own or spec.transfer_modes is None else spec.transfer_modes,
                kind="ablate" if own else "transfer",
                organism=target,
                name=f"ablate-{spec.direction}-from-{{target}}-{{mode}}",
                random_controls=spec.random_controls,
                first_control_seed=self.config.seed,
                control_kind=spec.control_kind,
                activations=activations,
                samples_per_paraphrase=spec.samples_per_paraphrase,
                settings={"direction": spec.direction},
            )

    def run_cosine(self) -> CosineComparison | None:
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
                    pair = compare_directions(
                        a,
                        b,
                        da.directions,
                        db.directions,
                        da.samples,
                        db.samples,
                        da.summary,
                        db.summary,
                        seed=self.config.seed,
                    )
                    pairs.append(pair.model_dump(mode="json"))
            stage.finish({"pairs": pairs})
        return CosineComparison(organisms=names, pairs=stage.result()["pairs"])

    def run_lora(self) -> LoraReading | None:
        spec = self.config.lora
        if spec is None:
            return None
        from misdirection import lora

        # The organism's own answers and its extraction rounds (the same model, new seeds): a
        # rank-1 organism answers aligned rarely, and the probe needs both classes.
        prefix = _round_prefix(spec.organism)
        answered = [self.condition(spec.organism)] + [
            c
            for c in self.engine.results.values()
            if c.kind == "extract" and c.name.startswith(prefix)
        ]
        keys = [c.key for c in answered]
        stage = self.store.stage(
            f"lora/{spec.organism}",
            {
                "judged": keys[0] if len(keys) == 1 else keys,
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
            own, *rounds = answered
            table = pd.concat(
                [
                    self.engine.table(own),
                    *(_tagged(self.engine.table(c), f"~{c.name}") for c in rounds),
                ],
                ignore_index=True,
            )
            self.log(
                f"probing the rank-1 adapters of {spec.organism} on {len(table)} answers "
                f"({len(answered)} draws)"
            )
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
                reading = report.summary(spec.organism)
                if b_cos is not None:
                    reading.b_cosines = [
                        BCosine.model_validate(row) for row in b_cos.to_dict(orient="records")
                    ]
                stage.finish(reading.model_dump(mode="json"))
            except MisdirectionError as exc:
                stage.finish(LoraReading(organism=spec.organism, error=str(exc)).model_dump())
        # A probe that cannot be fitted (too few answers per class) is a null result; the
        # interventions on the adapters below do not depend on it.
        result = LoraReading.model_validate(stage.result())
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
                    samples_per_paraphrase=spec.samples_per_paraphrase,
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
                        samples_per_paraphrase=spec.samples_per_paraphrase,
                        settings={"direction": spec.organism},
                    )
                )
        return result

    def run_geometry(self) -> GeometrySummary | None:
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
                "format": 3,  # the stage stores a GeometrySummary, with and without massive dims
            },
        )
        if not stage.done:
            stage.start()
            from misdirection import massive
            from misdirection.geometry.report import markdown_summary

            directions = self.state.directions
            # Every direction's massive dimensions (and the base's) zeroed in every stack: the
            # suite runs twice, on the raw directions and on these.
            dims: list[list[int]] = []
            for d in [*directions.values(), *([base] if base is not None else [])]:
                dims = massive.union(dims, d.summary.massive_dims)

            def stacks(lean: bool) -> dict[str, Any]:
                return {
                    name: (
                        massive.without(d.directions.directions, dims)
                        if lean
                        else d.directions.directions
                    ).numpy()
                    for name, d in directions.items()
                }

            markdown: dict[bool, str] = {}
            for lean in (False, True):
                layer_stacks = stacks(lean)
                base_stack = None
                if base is not None:
                    raw = base.directions.directions
                    base_stack = (massive.without(raw, dims) if lean else raw).numpy()
                self.log(
                    f"geometry of {len(layer_stacks)} directions at layer {layer}"
                    + (" without massive dimensions" if lean else "")
                )
                suite = run_suite(
                    {name: stack[layer] for name, stack in layer_stacks.items()},
                    out_dir=stage.dir / "without-massive" if lean else stage.dir,
                    n_null=spec.null_draws,
                    seed=self.config.seed,
                    layers={name: layer for name in layer_stacks},
                    layer_stacks=layer_stacks,
                    # Figure 3: each direction against the base model's own, grouped by procedure.
                    base_vectors=(
                        None if base_stack is None else {name: base_stack for name in layer_stacks}
                    ),
                    groups=groups if base is not None else None,
                    thresholds=self.thresholds,
                )
                markdown[lean] = markdown_summary(suite, body_only=True)
            figures = sorted(
                str(p.relative_to(self.store.root))
                for p in stage.dir.glob("**/*.png")
                if "without-massive" not in p.parts
            )
            summary = GeometrySummary(
                layer=layer,
                figures=figures,
                markdown=markdown[False],
                markdown_without_massive=markdown[True],
                massive_share={
                    name: d.summary.massive_share_at(layer) for name, d in directions.items()
                },
            )
            stage.finish(summary.model_dump(mode="json"))
        result = GeometrySummary.model_validate(stage.result())
        if base is None:
            self.state.notes.append(
                "Geometry: no base-model direction (extract.base), so no similarity to the base "
                "direction (Figure 3)."
            )
            return result
        # Cheap: recomputed on every run.
        result.base_ceilings = base_ceilings(
            self.state.directions, base, layer, groups, seed=self.config.seed
        )
        return result

    def run_defence(self) -> DefenceStageResult | None:
        """Training-time defences, monitor and screening (:mod:`misdirection.training_time.stage`)."""
        from misdirection.training_time.stage import run_defence_stage

        return run_defence_stage(self)

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
        base = self.engine.run("base", "base")
        for org in config.organisms:
            tuned = self.engine.run(org.name, "organism", organism=org.name)
            # What fine-tuning did: the organism against the base model, coherence beside EM.
            self.state.effects.append(
                self.engine.effect(
                    base,
                    tuned,
                    name=f"{org.name} vs base",
                    kind="organism",
                    settings={"organism": org.name},
                )
            )
        self.run_curves()
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
            judge=JudgeInfo(
                name=judge.name,
                rubrics=list(config.judging.rubrics),
                notice=_judge_notice(judge.name),
                flags=_total_flags(conditions),
                provenance={
                    f"{r} scores of every condition": judge.name for r in config.judging.rubrics
                },
            ),
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
            examples=self.engine.examples(kinds=("base", "organism")),
            notes=self.state.notes,
            seconds=round(time.time() - start, 1),
        )
        path = self.store.root / "results.json"
        results.total_seconds = round(results.seconds + _earlier_seconds(path), 1)
        atomic_write_text(path, results.model_dump_json(indent=2))
        self.store.set_info(finished=time.time())
        return path


def _round_prefix(name: str) -> str:
    """Extraction round ``k`` of a model is the condition ``{name}~extract-k`` (new seeds)."""
    return f"{name}~extract-"


def _tagged(df: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """``df`` with ``suffix`` on its answer ids: the same ids come back from every draw."""
    return df.assign(answer_id=df["answer_id"].astype(str) + suffix)


def _total_flags(conditions: list[ConditionResult]) -> dict[str, int]:
    """Judge flags summed over every judged condition (``n``: answers judged)."""
    total: dict[str, int] = {}
    for record in conditions:
        for kind, count in record.judge_flags.items():
            total[kind] = total.get(kind, 0) + int(count)
    return total


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
