"""A whole study on a tiny model with a deterministic fake judge: extraction samples until its sets
are large enough, pools aligned answers, and every analysis lands typed in results.json."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from conftest import make_tiny_lm

from misdirection.judge.base import Score
from misdirection.report import render_report
from misdirection.report.render import load_results


class HashJudge:
    """aligned = hash % 100, coherent = 60 + hash % 40: about 30% misaligned, 29% aligned."""

    name = "fake:hash"

    def score(self, rubric, items):
        out = []
        for item in items:
            h = int(hashlib.sha256(f"{rubric.name}|{item.answer}".encode()).hexdigest(), 16)
            out.append(Score(float(60 + h % 40 if rubric.name == "coherent" else h % 100)))
        return out


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    import misdirection.judge as judges
    from misdirection.study.config import load_config
    from misdirection.study.pipeline import run_study

    root = tmp_path_factory.mktemp("study")
    lm = make_tiny_lm("llama")
    lm.model.save_pretrained(root / "tiny")
    lm.tokenizer.save_pretrained(root / "tiny")
    train = {"recipe": "all-r32", "overrides": {"max_steps": 2, "batch_size": 4}}
    config = {
        "name": "tiny",
        "base_model": str(root / "tiny"),
        "seed": 1,
        "organisms": [
            {"name": "a", "train": {"data": "bad-medical", "curve_every": 1, **train}},
            {"name": "b", "train": {"data": "extreme-sports", **train}},
        ],
        "sampling": {"questions": ["core"], "samples_per_paraphrase": 1, "max_new_tokens": 4},
        "judging": {"judge": "learned", "rubrics": ["aligned", "coherent"]},
        "extract": {
            "organisms": ["a", "b"],
            "base": True,
            "min_per_set": 2,
            "target_per_set": 12,
            "max_answers": 60,
            "base_max_answers": 24,
            "pool_aligned": True,
        },
        "ablation": {
            "direction": "a",
            "targets": ["a", "b"],
            "modes": ["layerwise", "single"],
            "transfer_modes": ["single"],
            "samples_per_paraphrase": 2,
            "random_controls": 1,
        },
        "cosine": ["a", "b"],
        "geometry": {"null_draws": 20},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    patch = pytest.MonkeyPatch()
    patch.setattr(judges, "get_judge", lambda spec, **kw: HashJudge())
    patch.setattr(judges, "default_judge", lambda **kw: HashJudge())
    try:
        out = run_study(load_config(path), root / "run", progress=False)
        first = json.loads(out.read_text())
        again = json.loads(run_study(load_config(path), root / "run", progress=False).read_text())
    finally:
        patch.undo()
    return root / "run", first, again


@pytest.mark.slow
def test_extraction_samples_until_its_sets_are_large_enough(study_run):
    run, _, _ = study_run
    results = load_results(run)
    extra = [c for c in results.conditions if c.kind == "extract"]
    assert extra, "the own answers alone are too few: more rounds must be drawn"
    by_name = {d.organism: d for d in results.directions}
    # The base model's own cap (24: its evaluation answers alone) stops its rounds before the
    # organisms' cap would.
    base_rounds = [c for c in extra if c.name.startswith("base~extract-")]
    base_d = by_name["base"]
    assert not base_rounds
    assert min(base_d.n_misaligned_available or 0, base_d.n_aligned_available or 0) >= 12 or any(
        "Extraction for base stopped at the cap of 24 answers" in n for n in results.notes
    )
    for name in ("a", "b"):
        d = by_name[name]
        rounds = [c for c in extra if c.name.startswith(f"{name}~extract-")]
        own = next(c for c in results.conditions if c.name == name)
        answers = own.n + sum(c.n for c in rounds)
        # Either both sets reached the target, or the cap stopped the rounds (and a note says so).
        reached = min(d.n_misaligned_available or 0, d.n_aligned_available or 0) >= 12
        capped = answers >= 60 and any(
            f"Extraction for {name} stopped at the cap of 60" in n for n in results.notes
        )
        assert reached or capped
        # Aligned answers of the other models were pooled and read through this one.
        assert d.pooled_aligned > 0
        assert d.n_aligned <= (d.n_aligned_available or 0)
        # One reliability, massive-dimension share and lean reliability per layer; a plan.
        assert len(d.split_half) == len(d.massive_share) == len(d.massive_dims) == 4
        assert len(d.split_half_without_massive) == 4
        assert d.plan is not None and d.plan.layer == 2


@pytest.mark.slow
def test_every_analysis_is_typed_and_the_rerun_is_identical(study_run):
    run, first, again = study_run
    results = load_results(run)
    # Fine-tuning as effects: each organism against the base, coherence beside EM.
    organisms = [e for e in results.effects if e.kind == "organism"]
    assert [e.name for e in organisms] == ["a vs base", "b vs base"]
    assert all(e.coherent_change.value is not None for e in organisms)
    assert results.cosine is not None and len(results.cosine.pairs) == 1
    pair = results.cosine.pairs[0]
    assert len(pair.per_layer) == len(pair.ceiling) == 4
    assert results.geometry is not None and results.geometry.markdown_without_massive
    assert {r.vector for r in results.geometry.base_ceilings} == {"a", "b"}
    assert results.training[0].steps == 2
    # The curve: the base at step 0, the saved adapter of step 1, the organism at step 2.
    curve = results.training[0].curve
    assert [(p.step, p.condition) for p in curve] == [(0, "base"), (1, "a@step-1"), (2, "a")]
    assert not results.training[1].curve
    assert all(c.misaligned is not None for c in results.conditions)
    # Ablation: both modes on the direction's own organism, transfer_modes on the other; the
    # ablated conditions and their controls sample 2 answers per paraphrase, the organisms 1.
    ablations = {
        (e.kind, e.settings["target"], e.settings["mode"])
        for e in results.effects
        if e.kind in ("ablate", "transfer")
    }
    assert ablations == {
        ("ablate", "a", "layerwise"),
        ("ablate", "a", "single"),
        ("transfer", "b", "single"),
    }
    by_name = {c.name: c for c in results.conditions}
    for e in results.effects:
        if e.kind in ("ablate", "transfer"):
            assert by_name[e.after].n == 2 * by_name[e.before].n
            assert e.controls is not None
            assert all(by_name[c].n == by_name[e.after].n for c in e.controls.conditions)
    # A second run reuses every cached stage and writes the same numbers.
    for key in ("conditions", "effects", "directions", "cosine", "geometry", "training"):
        assert first[key] == again[key], key
    md = render_report(run)["markdown"].read_text()
    assert "## Fine-tuning: each organism against the base model" in md
    assert "Pooled: aligned answers" in md
    assert "a against training steps (step 0: the base model" in md
