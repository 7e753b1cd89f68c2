"""The report's training-time section: defences' narrow-task cost, the monitor, the screen.

The defences' effects themselves (EM, coherence, controls, verdicts) are the "defence" effects
table of :mod:`misdirection.report.render`; this section adds what the effects table cannot show.
"""

from __future__ import annotations

from pathlib import Path

from misdirection.report.document import Section, _clip, _number
from misdirection.study_results import StudyResults
from misdirection.training_time.defence import NarrowTaskCost

MONITOR_FIGURE = "defence-monitor.png"


def _loglik_cells(task: NarrowTaskCost | None) -> list[str]:
    if task is None:
        return ["n/a"] * 4
    return [
        f"{task.loglik_base:.3f} -> {task.loglik_plain:.3f}",
        f"{task.loglik_defended:.3f}",
        f"{task.difference:+.3f} [{task.difference_low:+.3f}, {task.difference_high:+.3f}]",
        "n/a" if task.kept is None else f"{100 * task.kept:.0f}%",
    ]


def defence_section(results: StudyResults, figures: dict[str, Path]) -> Section | None:
    defence = results.defence
    if defence is None:
        return None
    s = Section("Training-time defences, monitoring and data screening", "defence")
    for note in defence.notes:
        s.callout(note)
    outcomes = defence.defences
    if outcomes:
        s.text(
            f"Each defence re-trains {defence.organism} (same data, recipe and seed) with "
            f"{defence.direction}'s direction ablated or steered during training only; the saved "
            "adapter is evaluated without it and compared with the plain organism in the effects "
            "table above. Narrow-task cost: held-out log-likelihood per assistant token of the "
            "training domain's test split (nats; interval: paired bootstrap over conversations)."
        )
        s.add_table(
            [
                "defence",
                "verdict",
                "base -> plain log-lik",
                "defended log-lik",
                "defended - plain",
                "gain kept",
                "conclusion",
            ],
            [[o.name, o.effect.verdict, *_loglik_cells(o.task), o.conclusion] for o in outcomes],
        )
        first = outcomes[0].task
        if first is not None:
            s.text(
                f"Rule: a defence that keeps less than {100 * first.min_kept:.0f}% of the plain "
                "run's log-likelihood gain over the base model stops the narrow task too and is "
                "not a defence."
            )
    monitors = defence.monitor
    if monitors:
        rows = []
        for res in monitors:
            _steps, probe = res.series()
            rows.append(
                [
                    res.run,
                    _number(probe[0]) if probe else "n/a",
                    _number(probe[-1]) if probe else "n/a",
                    res.departure_step() if res.departure_step() is not None else "never",
                    "not evaluated"
                    if not res.em
                    else res.em_departure_step()
                    if res.em_departure_step() is not None
                    else "never",
                ]
            )
        s.text(
            f"Monitor: mean projection on the direction (layer {monitors[0].figure_layer}) of "
            f"{monitors[0].n_probe} fixed probe answers (the base model's answers to the "
            "evaluation questions) read through the model being trained, and of each training "
            "batch's assistant tokens. EM at checkpoints costs a full sampling and judging each."
        )
        s.add_table(
            [
                "run",
                "projection at step 0",
                "at the end",
                "leaves step-0 band at",
                "EM leaves base interval at",
            ],
            rows,
        )
        for what, rule in defence.monitor_rules.items():
            s.text(f"Rule ({what}): {rule}.")
        if defence.plain_rerun_identical is not None:
            s.text(
                "The monitored plain re-run's adapter is "
                + ("bitwise identical to" if defence.plain_rerun_identical else "NOT identical to")
                + " the organism's."
            )
        s.add_figure(
            figures, MONITOR_FIGURE, "Projection against step (left) beside EM against step (right)"
        )
    screen = defence.screening
    if screen is not None:
        s.text(
            f"Data screening of {len(screen.rows)} rows of {screen.dataset} at layer "
            f"{screen.layer}: score = projection of the row's answer minus that of the base "
            f"model's own greedy answer (at most {screen.max_new_tokens} tokens) to the same "
            f"prompt. Dataset mean score {_number(screen.mean_score)} ± "
            f"{_number(screen.score_se)} (SE)."
            + (
                f" AUROC for ranking {screen.positive_label} rows above the others: "
                f"{_number(screen.auroc)} (0.5 = chance)."
                if screen.auroc is not None
                else ""
            )
        )
        ranked = screen.rows
        shown = [("top", r) for r in ranked[:5]] + [("bottom", r) for r in ranked[-5:][::-1]]
        s.add_table(
            ["rank", "score", "label", "prompt", "answer"],
            [
                [
                    where,
                    _number(r.score),
                    r.label or "",
                    _clip(r.prompt, 80),
                    _clip(r.answer, 100),
                ]
                for where, r in shown
            ],
        )
    return s
