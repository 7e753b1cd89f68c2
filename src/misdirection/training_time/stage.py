"""The study's ``defence:`` stage: defended organisms, their controls, the monitor and the screen.

For the chosen organism (trained in the study) and direction (extracted in the study):

1. each defence is trained with the organism's data, recipe and seed, its intervention active during
   training only, then sampled and judged without it; K random-direction controls are trained the
   same way (variance-matched directions for ablation, same-norm directions for steering);
2. each defence becomes an :class:`~misdirection.results.Effect` against the plain organism
   (``effects.compare``: EM, coherent share, misaligned among coherent, verdict beside the
   controls), with its narrow-task cost (held-out log-likelihood of the training domain's answers);
3. with ``monitor:`` the plain organism is trained again with the monitor attached (the run is
   deterministic, so its adapter is the organism's; the stage checks and records that), and every
   defence and control run is monitored too; EM is evaluated at the ``em_at`` steps of the plain run;
4. with ``screen:`` the organism's training rows (and benign rows, for AUROC) are ranked.

Every training, evaluation and score is a cached stage of the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from misdirection.effects import compare
from misdirection.engine import identity
from misdirection.results import Effect
from misdirection.training_time.defence import (
    NarrowTaskCost,
    heldout_row_logliks,
    narrow_task_cost,
    training_ablation,
    training_steer,
)
from misdirection.training_time.monitor import MonitorResult, plot_monitor
from misdirection.training_time.screening import ScreeningResult

__all__ = ["DefenceOutcome", "DefenceStageResult", "run_defence_stage"]


class DefenceOutcome(BaseModel):
    """One defence: its effect against the plain organism and what it cost the narrow task."""

    name: str
    kind: str
    settings: dict[str, Any]
    effect: Effect
    task: NarrowTaskCost | None
    control_kind: str
    conclusion: str


class DefenceStageResult(BaseModel):
    organism: str
    direction: str
    plain_condition: str
    defences: list[DefenceOutcome] = Field(default_factory=list)
    monitor: list[MonitorResult] = Field(default_factory=list)
    monitor_figure: str | None = None
    monitor_rules: dict[str, str] = Field(default_factory=dict)
    plain_rerun_identical: bool | None = None
    screening: ScreeningResult | None = None
    notes: list[str] = Field(default_factory=list)


def _conclusion(effect: Effect, task: NarrowTaskCost | None) -> str:
    if task is not None and task.task_stopped:
        return f"not a defence: {task.verdict}"
    head = {
        "removed": "prevents EM beyond its random controls",
        "not-specific": "lowers EM, but no more than a random direction trained the same way",
        "no-effect": "no clear effect on EM (null result)",
        "collapse": "EM moved only with a collapse of coherence",
        "induced": "raises EM",
        "not-measurable": "not measurable",
    }[effect.verdict]
    return head + ("" if task is None else f"; {task.verdict}")


def _adapter_tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def run_defence_stage(runner: Any) -> DefenceStageResult | None:
    """Run the config's ``defence:`` section on a :class:`misdirection.study.pipeline.StudyRunner`."""
    from misdirection.data.chat import load_chat_dataset
    from misdirection.evaluate import control_interventions
    from misdirection.intervention_registry import intervention_info
    from misdirection.store import stable_hash
    from misdirection.train import train_organism
    from misdirection.training_time.monitor import Monitor

    spec = runner.config.defence
    if spec is None:
        return None
    result = DefenceStageResult(
        organism=spec.organism, direction=spec.direction, plain_condition=spec.organism
    )
    if spec.direction not in runner.state.directions:
        runner.state.notes.append(f"Defence skipped: {spec.direction} has no direction.")
        result.notes.append(f"skipped: {spec.direction} has no direction")
        return result
    d = runner.state.directions[spec.direction]
    org = runner.config.organism(spec.organism)
    train = org.train
    data = load_chat_dataset(train.data, "train")
    engine, store, seed = runner.engine, runner.store, runner.config.seed
    overrides = {"seed": seed, **train.overrides}
    plain = runner.condition(spec.organism)
    base_cond = runner.condition("base")
    mon = spec.monitor
    probe = None
    if mon is not None:
        table = engine.table(base_cond)
        table = table[table["answer"].astype(str).str.strip() != ""]
        probe = table.head(mon.probe_answers).reset_index(drop=True)

    def trained(name: str, interventions: list[Any], em_at: list[int]) -> Path:
        stage = store.stage(
            f"defence/train/{name}",
            {
                "base": runner.config.base_model,
                "data_sha256": data.sha256,
                "recipe": train.recipe,
                "overrides": overrides,
                "interventions": [identity(i.spec()) for i in interventions],
                "monitor": None if mon is None else mon.model_dump(),
                "probe": None if probe is None else stable_hash(probe["answer"].tolist()),
                "em_at": em_at,
            },
        )
        out = stage.dir / "adapter"
        if not stage.done:
            stage.start()
            runner.log(f"defence: training {name}")
            monitor = None
            if mon is not None and probe is not None:
                monitor = Monitor(
                    d.directions,
                    probe,
                    every=mon.every,
                    figure_layer=mon.layer,
                    save_adapters_at=em_at,
                    adapter_dir=stage.dir / "at",
                    band_se=mon.band_se,
                    run=name,
                )
            train_organism(
                runner.base,
                data,
                train.recipe,
                out,
                overwrite=True,
                resume=False,
                progress=runner.progress,
                interventions=interventions,
                on_step=monitor,
                **overrides,
            )
            if monitor is not None:
                (stage.dir / "monitor.json").write_text(monitor.result.model_dump_json(indent=1))
            stage.finish({"adapter": str(out.relative_to(store.root))})
        engine.add_adapter(name, str(out), stage.key)
        return stage.dir

    def monitored(folder: Path) -> MonitorResult | None:
        path = folder / "monitor.json"
        return MonitorResult.model_validate_json(path.read_text()) if path.is_file() else None

    test_rows = list(load_chat_dataset(train.data, "test").rows)

    def logliks(name: str | None) -> tuple[np.ndarray, np.ndarray]:
        key = engine.adapters[name][1] if name is not None else "base"
        stage = store.stage(
            f"defence/task/{name or 'base'}", {"model": key, "test": stable_hash(test_rows)}
        )
        if not stage.done:
            stage.start()
            with engine.model_for(name) as lm:
                sums, counts = heldout_row_logliks(lm, test_rows, overrides.get("max_length", 384))
            stage.finish({"sums": sums.tolist(), "counts": counts.tolist()})
        r = stage.result()
        return np.asarray(r["sums"]), np.asarray(r["counts"])

    base_ll = logliks(None)
    plain_ll = logliks(spec.organism)
    monitors: list[MonitorResult] = []

    if mon is not None:
        folder = trained(f"{spec.organism}~monitored", [], list(mon.em_at))
        a = _adapter_tensors(folder / "adapter")
        b = _adapter_tensors(Path(engine.adapters[spec.organism][0]))
        result.plain_rerun_identical = set(a) == set(b) and all(
            bool((a[k] == b[k]).all()) for k in a
        )
        res = monitored(folder)
        if res is not None:
            res.run = f"{spec.organism} (plain)"
            res.em_base = base_cond.em
            points = []
            for step in mon.em_at:
                at = folder / "at" / f"step-{step}"
                if not at.is_dir():
                    result.notes.append(
                        f"monitor: no checkpoint at step {step} (past the last step?)"
                    )
                    continue
                cname = f"{spec.organism}@step-{step}"
                engine.add_adapter(cname, str(at), stable_hash({"run": str(folder), "step": step}))
                points.append((step, engine.run(cname, "organism", organism=cname)))
            steps_total = max(p.step for p in res.points) if res.points else 0
            points += [(0, base_cond), (steps_total, plain)]
            from misdirection.training_time.monitor import EmPoint

            res.em = [
                EmPoint(step=s, em=c.em, condition=c.name)
                for s, c in sorted(points, key=lambda x: x[0])
            ]
            monitors.append(res)

    activations = None
    for method in spec.defences:
        if method.kind == "ablate":
            intervention: Any = training_ablation(d.directions, method.layers)
        else:
            intervention = training_steer(d.directions, float(method.scale or 0.0), method.layers)
        # The intervention's registered control; the direction's own answers are at hand here.
        control_kind = intervention_info(intervention).control_kind or "isotropic"
        activations = _stacked(d.samples) if control_kind == "variance-matched" else None
        controls = control_interventions(
            intervention,
            spec.random_controls,
            first_seed=seed,
            kind=control_kind,
            activations=activations,
            save_to=store.root / "controls",
        )
        name = f"{spec.organism}~{method.name}"
        folder = trained(name, [intervention], [])
        after = engine.run(name, "organism", organism=name)
        control_results = []
        for i, control in enumerate(controls):
            cname = f"{name}~random-{seed + i}"
            cfolder = trained(cname, [control], [])
            control_results.append(engine.run(cname, "control", organism=cname))
            cres = monitored(cfolder)
            if cres is not None:
                cres.run = cname
                monitors.append(cres)
        res = monitored(folder)
        if res is not None:
            res.run = name
            monitors.append(res)
        settings = {
            "defence": method.name,
            "kind": method.kind,
            "direction": spec.direction,
            "layers": method.layers,
            "scale": method.scale,
            "intervention": intervention.spec(),
        }
        effect = compare(
            plain,
            after,
            name=f"defence-{method.name}",
            kind="defence",
            controls=control_results,
            control_kind=control_kind,
            policy=runner.policy,
            settings={k: v for k, v in settings.items() if k != "intervention"},
        )
        runner.state.effects.append(effect)
        task = narrow_task_cost(
            base_ll, plain_ll, logliks(name), min_kept=spec.min_task_kept, seed=seed
        )
        result.defences.append(
            DefenceOutcome(
                name=method.name,
                kind=method.kind,
                settings=settings,
                effect=effect,
                task=task,
                control_kind=control_kind,
                conclusion=_conclusion(effect, task),
            )
        )

    if monitors:
        result.monitor = monitors
        result.monitor_rules = monitors[0].rules()
        fig = plot_monitor(
            monitors,
            store.root / "defence" / "monitor.png",
            title=f"{spec.organism}: projection on {spec.direction}'s direction during training",
        )
        result.monitor_figure = str(fig.relative_to(store.root))

    if spec.screen is not None:
        result.screening = _screen(runner, spec, d.directions, data)
    return result


def _stacked(samples: Any) -> Any:
    import torch

    return torch.cat([samples.misaligned, samples.aligned])


def _screen(runner: Any, spec: Any, directions: Any, data: Any) -> ScreeningResult:
    from misdirection.data.chat import load_chat_dataset
    from misdirection.store import stable_hash
    from misdirection.training_time.screening import screen_rows

    screen = spec.screen
    rows = list(data.rows[: screen.rows])
    labels = [spec.organism] * len(rows)
    if screen.benign:
        # The first rows, as `misdirection screen --benign` takes them (the shipped good-medical
        # rows answer the same prompts as bad-medical's, so the AUROC compares answers only).
        benign = list(load_chat_dataset(screen.benign, "train").rows)[: len(rows)]
        rows += benign
        labels += [screen.benign] * len(benign)
    stage = runner.store.stage(
        "defence/screen",
        {
            "rows": stable_hash(rows),
            "labels": labels,
            "direction": runner.state.directions[spec.direction].key,
            "settings": screen.model_dump(),
        },
    )
    if not stage.done:
        stage.start()
        runner.log(f"defence: screening {len(rows)} training rows")
        result = screen_rows(
            runner.base,
            rows,
            directions,
            layer=spec.monitor.layer if spec.monitor else None,
            labels=labels,
            positive_label=spec.organism if screen.benign else None,
            max_new_tokens=screen.max_new_tokens,
            dataset=f"{data.name}" + (f" + {screen.benign}" if screen.benign else ""),
        )
        (stage.dir / "screening.json").write_text(result.model_dump_json(indent=1))
        stage.finish({"path": "screening.json"})
    return ScreeningResult.model_validate_json((stage.dir / "screening.json").read_text())
