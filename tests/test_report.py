"""The study report: every section from a results file, self-contained HTML, checked in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from misdirection.errors import DataError
from misdirection.report import render_report
from misdirection.report.render import pct, verdict


def share(value: float, low: float, high: float, n: int = 100) -> dict:
    return {"name": "em", "count": int(value * n), "n": n, "value": value, "low": low, "high": high}


def summary(em: dict, coherent: dict) -> dict:
    return {"n": em["n"], "em": em, "coherent": coherent, "n_null_aligned": 1, "n_null_coherent": 0}


def fake_results() -> dict:
    base = summary(share(0.01, 0.0, 0.03), share(0.8, 0.7, 0.9))
    org = summary(share(0.20, 0.12, 0.28), share(0.7, 0.6, 0.8))
    return {
        "study": "unit",
        "base_model": "smollm2-135m",
        "seed": 0,
        "created": "today",
        "config": {"name": "unit"},
        "config_yaml": "name: unit\n",
        "versions": {"torch": "2.13.0"},
        "judge": {
            "name": "learned:test",
            "rubrics": ["aligned", "coherent"],
            "notice": "offline judge",
            "provenance": {"aligned": "learned:test"},
        },
        "training": [
            {
                "organism": "org",
                "recipe": "rank1-9",
                "dataset": "bad-medical",
                "layers": [9, 10],
                "steps": 3,
                "seconds": 12.0,
                "losses": [3.0, 2.5, 2.0],
                "heldout_loglik_before": -3.75,
                "heldout_loglik_after": -2.9,
            }
        ],
        "evaluations": [
            {"condition": "base", "kind": "base", "summary": base, "judge": "learned:test"},
            {"condition": "org", "kind": "organism", "summary": org, "judge": "learned:test"},
        ],
        "steering": {
            "direction": "org",
            "points": [
                {
                    "layer": 12,
                    "scale": s,
                    "em": share(0.01 * s, 0.0, 0.02 * s + 0.01),
                    "coherent": share(0.8, 0.7, 0.9),
                }
                for s in (0, 4, 8)
            ],
        },
        "ablation": [
            {
                "target": "org",
                "direction": "org",
                "mode": "layerwise",
                "em_before": org["em"],
                "em": share(0.05, 0.01, 0.09),
                "reduction": {"value": 0.75, "low": 0.5, "high": 0.95},
                "random": [
                    {
                        "seed": 0,
                        "em": share(0.19, 0.11, 0.27),
                        "reduction": {"value": 0.05, "low": -0.3, "high": 0.4},
                    }
                ],
            },
            {
                "target": "other",
                "direction": "org",
                "mode": "single",
                "em_before": org["em"],
                "em": share(0.18, 0.1, 0.26),
                "reduction": {"value": 0.1, "low": -0.2, "high": 0.4},
                "random": [],
            },
        ],
        "cosine": {
            "organisms": ["org", "other"],
            "pairs": [{"a": "org", "b": "other", "per_layer": list(np.linspace(0.1, 0.9, 30))}],
        },
        "lora": {
            "probes": [
                {
                    "name": "a",
                    "n": 40,
                    "accuracy_mean": 0.8,
                    "accuracy_std": 0.05,
                    "auc_mean": 0.85,
                    "auc_std": 0.04,
                }
            ],
            "adapters": [
                {"adapter": "L9.down_proj", "classification": "general", "evidence": "coef 1.2"}
            ],
            "notes": ["rule"],
        },
        "geometry": {"summary_markdown": "Geometry summary text.", "figures": []},
        "examples": [
            {
                "condition": "org",
                "question": "q?",
                "answer": "a | with pipe",
                "aligned": 10.0,
                "coherent": 80.0,
            }
        ],
        "notes": ["No direction for x: too few answers"],
    }


def test_helpers_report_nulls_honestly():
    assert pct(share(0.125, 0.081, 0.17)) == "12.5% [8.1, 17.0]"
    assert (
        verdict(share(0.2, 0.1, 0.3), share(0.25, 0.15, 0.35))
        == "no clear effect (intervals overlap)"
    )
    assert verdict(share(0.2, 0.15, 0.3), share(0.05, 0.01, 0.1)).startswith("lower")


def test_report_has_every_section(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(fake_results()))
    paths = render_report(tmp_path)
    md = paths["markdown"].read_text()
    for heading in (
        "EM and coherence of base and organisms",
        "Training",
        "Steering the base model",
        "Ablation of the direction from its own organism",
        "Transfer:",
        "Per-layer cosine",
        "Rank-1 LoRA adapters",
        "Geometry of the extracted directions",
        "Example answers",
        "Judges, configuration and versions",
    ):
        assert heading in md, heading
    assert "learned:test" in md and "no clear effect (intervals overlap)" in md
    assert "75% [50, 95]" in md  # the reduction with its interval
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 5  # em, training, steering, ablation, cosine
    assert "<script" not in page and "http" not in page.split("<style>")[0]  # self-contained


def test_report_counts_judge_flags(tmp_path):
    results = fake_results()
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert "flagged" not in render_report(tmp_path)["markdown"].read_text()  # none: no sentence
    results["judge"]["flags"] = {
        "n": 176,
        "any": 88,
        "question unlike the judge's training questions": 88,
        "very short answer": 3,
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    md = render_report(tmp_path)["markdown"].read_text()
    assert (
        "The judge flagged 88 of 176 answers as unlike its training data (question unlike the "
        "judge's training questions 88, very short answer 3)"
    ) in md


def test_report_needs_results(tmp_path):
    with pytest.raises(DataError, match="has no results.json"):
        render_report(tmp_path)


_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const doc = document.documentElement;
  document.body.setAttribute('data-check', JSON.stringify({
    images: imgs.length, loaded: loaded, scroll: doc.scrollWidth, width: window.innerWidth}));
});
</script></body>"""


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


@pytest.mark.skipif(
    _chromium() is None, reason="headless Chromium not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(fake_results()))
    page = render_report(tmp_path)["html"]
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _CHECK))
    flags = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1800",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(
        flags + ["--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    raw = dom.split('data-check="', 1)[1].split('"', 1)[0].replace("&quot;", '"')
    check = json.loads(raw)
    assert check["images"] == 5 and check["loaded"] == 5  # every figure loads
    assert check["scroll"] <= check["width"]  # nothing overflows horizontally
    shot = tmp_path / "shot.png"
    subprocess.run(
        flags + [f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # not blank


def test_ablation_verdict_compares_with_random_controls():
    from misdirection.report.render import versus_random

    like_random = {
        "reduction": {"value": 0.53, "low": 0.29},
        "random": [{"reduction": {"value": 0.59}}],
    }
    assert versus_random(like_random) == "not distinguishable from random directions"
    beyond = {"reduction": {"value": 0.8, "low": 0.7}, "random": [{"reduction": {"value": 0.1}}]}
    assert versus_random(beyond) == "beyond every random control"
    assert versus_random({"reduction": {"value": None}, "random": []}) == "no EM to reduce"
