"""The study report: rendered from a typed StudyResults, the same cells as the CLI, checked in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from misdirection.directions import CosineComparison, CosinePair, DirectionSummary
from misdirection.effects import compare
from misdirection.errors import DataError
from misdirection.geometry.summary import BaseCeiling, GeometrySummary
from misdirection.intervals import wilson
from misdirection.lora.reading import AdapterRole, BCosine, LoraReading, ProbeSummary
from misdirection.reliability import plan_set_sizes
from misdirection.report import render_report
from misdirection.report.markdown import to_html
from misdirection.results import (
    EFFECT_COLUMNS,
    ConditionResult,
    EffectPolicy,
    Example,
    JudgeInfo,
    Share,
    effect_cells,
    pct,
)
from misdirection.study_results import StudyResults
from misdirection.train.summary import TrainingRun

JUDGE = "learned:test"


def share(count: int, n: int = 100) -> Share:
    low, high = wilson(count, n)
    return Share(count=count, n=n, value=count / n, low=low, high=high)


def condition(
    name: str, kind: str, em: int, coherent: int, mc: int | None = None
) -> ConditionResult:
    """A judged condition of 100 answers: ``em`` misaligned and ``coherent`` coherent ones."""
    return ConditionResult(
        name=name,
        kind=kind,
        key=f"key-{name}",
        model="smollm2-135m",
        judge=JUDGE,
        n=100,
        em=share(em),
        coherent=share(coherent),
        misaligned_coherent=share(em if mc is None else mc, max(coherent, 1)),
        misaligned=share(em + 5),  # 5 more misaligned answers than EM ones (incoherent)
        n_null_aligned=1,
        n_null_coherent=0,
    )


def study(**extra) -> StudyResults:
    """Base, organism, steering with controls, a collapse, a removal beyond 5 controls, a null."""
    policy = EffectPolicy()
    base = condition("base", "base", em=1, coherent=90)
    org = condition("org", "organism", em=20, coherent=80)
    conditions = [base, org]
    effects = []
    # Steering at layer 1: a mild rise, then EM rises while coherence collapses.
    for scale, em, coh in ((4, 5, 85), (8, 30, 40)):
        after = condition(f"steer-L1-x{scale}", "steer", em=em, coherent=coh)
        controls = [
            condition(f"steer-L1-x{scale}~random-{i}", "control", em=1 + i % 2, coherent=88)
            for i in range(5)
        ]
        conditions += [after, *controls]
        effects.append(
            compare(
                base,
                after,
                name=after.name,
                kind="steer",
                controls=controls,
                policy=policy,
                settings={"layer": 1, "scale": scale},
            )
        )
    # Ablation that breaks the model: EM 20% -> 2%, coherent 80% -> 10%.
    broken = condition("ablate-org-layerwise", "ablate", em=2, coherent=10)
    # Ablation that removes misalignment, coherence kept, beyond 5 variance-matched controls.
    kept = condition("ablate-org-single", "ablate", em=3, coherent=78)
    kept_controls = [
        condition(f"ablate-org-single~random-{i}", "control", em=em, coherent=80)
        for i, em in enumerate((18, 19, 21, 17, 20))
    ]
    # Transfer with no clear effect.
    null = condition("transfer-org-to-other", "ablate", em=18, coherent=80)
    conditions += [broken, kept, *kept_controls, null]
    effects += [
        compare(org, broken, name=broken.name, kind="ablate", policy=policy),
        compare(
            org,
            kept,
            name=kept.name,
            kind="ablate",
            controls=kept_controls,
            control_kind="variance-matched",
            policy=policy,
        ),
        compare(org, null, name=null.name, kind="transfer", policy=policy),
    ]
    fields = dict(
        study="unit",
        base_model="smollm2-135m",
        seed=0,
        created="2025-01-01T00:00:00",
        config={"name": "unit"},
        config_yaml="name: unit\n",
        versions={"torch": "2.13.0"},
        judge=JudgeInfo(
            name=JUDGE, notice="offline judge", provenance={"aligned": JUDGE, "coherent": JUDGE}
        ),
        policy=policy,
        conditions=conditions,
        effects=effects,
        notes=["No direction for x: too few answers"],
    )
    fields.update(extra)
    return StudyResults(**fields)


def full_extras(tmp_path) -> dict:
    """Every optional section, with numbers whose formatted value is known."""
    import matplotlib.pyplot as plt

    from misdirection.plotting import save_figure

    figure, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(figure, tmp_path / "stages" / "geometry" / "similarity.png")
    return dict(
        training=[
            TrainingRun(
                organism="org",
                recipe="rank1-9",
                dataset="bad-medical",
                layers=[9, 10],
                steps=3,
                seconds=12.0,
                losses=[3.0, 2.5, 2.0],
                heldout_loglik_before=-3.75,
                heldout_loglik_after=-2.9,
            )
        ],
        directions=[
            DirectionSummary(
                organism="org",
                path="stages/extract/org/directions.safetensors",
                n_misaligned=20,
                n_aligned=60,
                split_half=[0.2, 0.4, 0.6, None],
                massive_share=[0.1, 0.2, 0.9, None],
                split_half_without_massive=[0.1, 0.1, 0.05, None],
                plan=plan_set_sizes(0.05, 20, 60, layer=2),
            ),
            DirectionSummary(
                organism="other",
                path="stages/extract/other/directions.safetensors",
                n_misaligned=4,
                n_aligned=4,
                n_aligned_available=15,
                split_half=[None, None, None, None],
                warning="only 4 misaligned answers (minimum 8): mostly noise",
            ),
        ],
        cosine=CosineComparison(
            organisms=["org", "other", "third"],
            pairs=[
                CosinePair(
                    a="org",
                    b="other",
                    per_layer=[0.1, 0.2, 0.4, 0.5],
                    low=[0.0, 0.1, 0.3, 0.4],
                    high=[0.2, 0.3, 0.5, 0.6],
                    ceiling=[0.5, 0.6, 0.8, 0.9],
                    per_layer_without_massive=[0.0, 0.1, 0.2, 0.3],
                    ceiling_without_massive=[0.1, 0.1, 0.4, 0.2],
                    massive_share_a=[0.1, 0.2, 0.9, None],
                ),
                CosinePair(a="org", b="third", per_layer=list(np.linspace(0.1, 0.7, 4))),
            ],
            note="ceiling = sqrt(reliability_a * reliability_b)",
        ),
        lora=LoraReading(
            organism="org",
            probes=[
                ProbeSummary(
                    name="misalignment",
                    n=40,
                    accuracy_mean=0.8,
                    accuracy_std=0.05,
                    auc_mean=0.85,
                    auc_std=0.04,
                )
            ],
            adapters=[
                AdapterRole(adapter="L9.down_proj", classification="general", evidence="coef 1.2")
            ],
            notes=["rule"],
            b_cosines=[BCosine(adapter="L9.down_proj", layer=9, cosine=0.25)],
        ),
        geometry=GeometrySummary(
            layer=2,
            figures=["stages/geometry/similarity.png"],
            markdown=(
                "## Similarity\n\n"
                "| a | b | cosine |\n|---|---|---|\n| org | other | 0.4 |\n\n"
                "Note <img src=x onerror=alert(1)> stays text.\n\n## Notes\n\n- kept"
            ),
            base_ceilings=[
                BaseCeiling(
                    vector="org",
                    group="rank1-9",
                    layer=2,
                    cosine=0.2,
                    low=0.1,
                    high=0.3,
                    ceiling=0.4,
                )
            ],
        ),
        examples=[
            Example(
                condition="org",
                question="q?",
                answer="a | with pipe <script>alert(1)</script>",
                aligned=10.0,
                coherent=80.0,
            )
        ],
    )


def write(tmp_path, results: StudyResults) -> None:
    (tmp_path / "results.json").write_text(results.model_dump_json(indent=2))


class Tables(HTMLParser):
    """Every table of a page: a list of rows, each (css class, cells), with headers as row 0."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[tuple[str, list[str]]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append((dict(attrs).get("class", ""), []))
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1][1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def tables_of(page: str) -> list[list[tuple[str, list[str]]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables


def test_verdicts_of_the_planted_effects():
    by_name = {e.name: e for e in study().effects}
    assert by_name["ablate-org-layerwise"].verdict == "collapse"
    assert by_name["ablate-org-single"].verdict == "removed"
    assert by_name["ablate-org-single"].controls.rank_p == pytest.approx(1 / 6)
    assert by_name["transfer-org-to-other"].verdict == "no-effect"
    assert by_name["steer-L1-x8"].verdict == "collapse"


def test_html_cells_are_the_cli_cells_and_collapse_is_never_removed(tmp_path):
    results = study()
    write(tmp_path, results)
    page = render_report(tmp_path)["html"].read_text()
    effect_rows = {
        cells[0]: (css, cells)
        for table in tables_of(page)
        for css, cells in table
        if css.startswith("verdict-")
    }
    assert set(effect_rows) == {e.name for e in results.effects}
    for e in results.effects:
        css, cells = effect_rows[e.name]
        assert cells == effect_cells(e)  # the same strings as the CLI table, verdict included
        assert css == f"verdict-{e.verdict}"
    collapse = effect_rows["ablate-org-layerwise"][1]
    assert collapse[-1].startswith("collapse: EM fell (-18.0 pts")
    assert "removed" not in " ".join(collapse)
    assert collapse[4:7] == ["80.0% [71.1, 86.7]", "10.0% [5.5, 17.4]", "-70.0 pts [-78.0, -58.4]"]
    removed = effect_rows["ablate-org-single"][1]
    assert removed[-1].startswith("removed: EM fell (-17.0 pts")
    assert "beyond all 5 random controls (rank p = 0.17)" in removed[-1]
    # 20/100 before, 100 after: a fall of 13.3 points is the smallest one 80% power detects.
    assert removed[9] == "-13.3 pts (80% power)"
    assert removed[10] == (
        "K=5 variance-matched: EM change -3.0 .. +1.0 pts, coherent change +0.0 .. +0.0 pts; "
        "beyond every control, rank p = 0.17"
    )


def test_every_effects_table_carries_coherence(tmp_path):
    write(tmp_path, study())
    paths = render_report(tmp_path)
    headers = [t[0][1] for t in tables_of(paths["html"].read_text()) if t[0][1][0] == "effect"]
    assert len(headers) == 3  # steer, ablate, transfer
    for header in headers:
        assert header == list(EFFECT_COLUMNS)
        assert {"coherent before", "coherent after", "coherent change"} <= set(header)
    md = paths["markdown"].read_text()
    assert md.count("| effect | EM before | EM after | EM change | coherent before |") == 3
    for title in (
        "## Steering the base model",
        "## Ablation of the direction from its own organism",
        "## Transfer: ablating one organism's direction from other organisms",
    ):
        assert title in md
    # The controls rule once per section that has controls: steering and ablation, not transfer.
    assert md.count("Random controls: beyond random = the EM change lies beyond every") == 2


def test_markdown_rows_equal_the_cli_cells(tmp_path):
    results = study()
    write(tmp_path, results)
    md = render_report(tmp_path)["markdown"].read_text()
    for e in results.effects:
        row = "| " + " | ".join(c.replace("|", "\\|") for c in effect_cells(e)) + " |"
        assert row in md, e.name


def test_header_states_judge_policy_notes_and_flags(tmp_path):
    write(tmp_path, study())
    md = render_report(tmp_path)["markdown"].read_text()
    assert "# EM study: unit" in md and "**base model**: smollm2-135m" in md
    assert "Every score below comes from the judge **learned:test**. offline judge" in md
    assert "> No direction for x: too few answers" in md
    assert (
        "An EM change counts as removing (inducing) misalignment only if the coherent share falls "
        "by at most 10 points and it lies beyond every random control (rank rule)"
    ) in md
    assert "flagged" not in md  # no flags: no sentence
    flags = {"n": 176, "any": 88, "question unlike the judge's training questions": 88, "short": 3}
    write(
        tmp_path,
        study(judge={"name": JUDGE, "flags": flags}, policy=EffectPolicy(max_coherence_drop=0.05)),
    )
    md = render_report(tmp_path)["markdown"].read_text()
    assert (
        "The judge flagged 88 of 176 answers as unlike its training data (question unlike the "
        "judge's training questions 88, short 3)"
    ) in md
    assert "falls by at most 5 points" in md


def test_conditions_table_has_every_share_and_its_judge(tmp_path):
    write(tmp_path, study())
    page = render_report(tmp_path)["html"].read_text()
    table = next(t for t in tables_of(page) if t[0][1][0] == "condition")
    assert [cells[0] for _, cells in table[1:]] == ["base", "org"]  # no interventions, no controls
    assert table[2][1] == [
        "org",
        "100",
        "20.0% [13.3, 28.9]",
        "80.0% [71.1, 86.7]",
        "25.0% [16.8, 35.5] 20/80",
        pct(share(25)),
        "1/0",
        JUDGE,
    ]


def test_conditions_table_shows_judged_topic_shares(tmp_path):
    """A topic rubric judged (the learned judge's medical) gets its share column; a condition
    judged without it says so rather than showing 0%."""
    results = study()
    low, high = wilson(30, 100)
    topics = {"medical": Share(count=30, n=100, value=0.3, low=low, high=high)}
    conditions = [results.conditions[0].model_copy(update={"topics": topics})]
    write(tmp_path, results.model_copy(update={"conditions": conditions + results.conditions[1:]}))
    page = render_report(tmp_path)["html"].read_text()
    table = next(t for t in tables_of(page) if t[0][1][0] == "condition")
    assert table[0][1][6] == "medical > 50 [95% CI]"
    assert table[1][1][6] == "30.0% [21.9, 39.6]" and table[2][1][6] == "not judged"


def test_missing_sections_are_omitted(tmp_path):
    write(tmp_path, study())
    paths = render_report(tmp_path)
    md = paths["markdown"].read_text()
    for absent in (
        "## Training",
        "## Directions",
        "## Per-layer cosine",
        "## Rank-1 LoRA",
        "## Geometry",
        "## Example answers",
        "## Adapter steering",
        "## B-vector ablation",
    ):
        assert absent not in md, absent
    assert "## Judges, configuration and versions" in md
    figures = sorted(p.name for p in paths["figures"].iterdir())
    assert figures == [
        "conditions.png",
        "effects-ablate.png",
        "effects-steer.png",
        "effects-transfer.png",
    ]


def test_every_section_with_data(tmp_path):
    write(tmp_path, study(**full_extras(tmp_path)))
    paths = render_report(tmp_path)
    md = paths["markdown"].read_text()
    # Training: layers joined, final loss, held-out log-likelihood.
    assert "| org | rank1-9 | bad-medical | 9, 10 | 3 | 12 | 2.000 | -3.750 -> -2.900 |" in md
    # Directions: the middle layer of 4 is layer 2; the mean skips the undefined layer.
    # Beside each: the massive dimensions' share there, and the reliabilities without them.
    assert "| org | 20 | 60 | 0.600 (layer 2) | 90% | 0.050 | 0.400 | 0.083 |" in md
    assert "| other | 4 | 4 (of 15) | n/a (layer 2) | n/a | n/a | n/a | n/a |" in md
    assert "> org: massive dimensions hold 90% of the direction at layer 2" in md
    # Spearman-Brown: from 0.05 to 0.8 takes 76x the answers.
    assert "about 1520 misaligned and 4560 aligned answers (76.0x) would reach 0.8" in md
    assert "![Split-half reliability per layer" in md
    assert "> other: only 4 misaligned answers (minimum 8): mostly noise" in md
    # Cosines: the middle-layer cosine with its interval, beside its ceiling and as a fraction.
    assert (
        "| org | other | 0.300 | 0.400 [0.300, 0.500] (layer 2) (massive-dominated) | 0.800 | "
        "0.50 | 0.200 | 0.400 | 0.50 |"
    ) in md
    assert "> org vs other: massive dimensions hold most of a direction" in md
    assert (
        "| org | third | 0.400 | 0.500 (layer 2) | no samples: no ceiling | n/a | n/a | "
        "no samples: no ceiling | n/a |"
    ) in md
    # LoRA, geometry (headings nested under the section), examples (pipes escaped).
    assert "- misalignment: accuracy 0.800 ± 0.050, AUC 0.850 ± 0.040 (n=40)" in md
    assert "| L9.down_proj | 9 | 0.250 |" in md
    assert "## Geometry of the extracted directions (layer 2)" in md
    assert "### Similarity" in md and "# Geometry of misalignment" not in md
    assert "a \\| with pipe" in md
    assert "![similarity](figures/geometry-similarity.png)" in md
    # The suite's own figure list (links into its folder) is dropped; the section adds them once.
    assert "figures/similarity.png" not in md and "### Notes" in md
    # Figure 3's cosines beside their noise ceilings.
    assert (
        "| org | rank1-9 | 2 | 0.200 [0.100, 0.300] | 0.400 | 0.50 | n/a | no samples: no "
        "ceiling | n/a |"
    ) in md
    page = paths["html"].read_text()
    # Escaped everywhere: in table cells and in the geometry summary's markdown.
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<h3>Similarity</h3>" in page
    # Self-contained: conditions, training, 3 effect kinds, cosine, geometry.
    assert page.count('src="data:image/png;base64,') == 8  # and reliability
    assert "http" not in page.replace("http-equiv", "")


def test_invalid_or_missing_results_give_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"results.json is missing"):
        render_report(tmp_path)
    old = {"study": "unit", "evaluations": [], "steering": {}, "judge": {"name": JUDGE}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    with pytest.raises(DataError) as err:
        render_report(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "results.json") in message
    assert "older version of misdirection" in message
    assert "re-run `misdirection run" in message and "reused" in message
    assert "base_model: Field required" in message
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(DataError, match="does not validate as study results"):
        render_report(tmp_path)


def test_markdown_converter_escapes_and_keeps_structure():
    html = to_html(
        "## T\n\n| a | b \\| c |\n|---|---|\n| <b>x</b> | **y** |\n\n- one\n- two", shift=1
    )
    assert str(html) == (
        "<h3>T</h3>\n"
        '<div class="scroll"><table><tr><th>a</th><th>b | c</th></tr>'
        "<tr><td>&lt;b&gt;x&lt;/b&gt;</td><td><b>y</b></td></tr></table></div>\n"
        "<ul><li>one</li><li>two</li></ul>"
    )


def test_rerender_drops_figures_of_removed_sections(tmp_path):
    write(tmp_path, study(**full_extras(tmp_path)))
    render_report(tmp_path)
    write(tmp_path, study())
    paths = render_report(tmp_path)
    assert not (paths["figures"] / "cosine.png").exists()
    assert not (paths["figures"] / "training.png").exists()


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
    write(tmp_path, study(**full_extras(tmp_path)))
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
    assert check["images"] == 8 and check["loaded"] == 8  # every figure loads
    assert check["scroll"] <= check["width"]  # wide tables scroll inside their box
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


def test_first_screen_sets_each_claim_beside_the_paper_with_its_verdict(tmp_path):
    write(tmp_path, study(**full_extras(tmp_path)))
    md = render_report(tmp_path)["markdown"].read_text()
    first = md.index("## What this run shows, beside the paper")
    assert first < md.index("## EM and coherence of base and organisms")
    table = md[first : md.index("\n## ", first + 5)]
    # Steering: the point with the highest EM is shown, and its collapse is called one.
    assert "| Steering the base model with the direction induces EM | up to 50% EM |" in table
    assert "steer-L1-x8" in table and "collapse: coherence fell" in table
    # The ablation that broke the model is a collapse; the one that kept coherence is a removal.
    assert "ablate-org-layerwise" in table and "ablate-org-single" in table
    assert "removed: EM fell beyond its interval, coherence kept, beyond all 5 random" in table
    # The transfer without effect reads as a null.
    assert "transfer-org-to-other" in table and "null: the EM change's interval covers 0" in table
    # Cosines beside their ceiling, with and without massive dimensions; the ceiling caveat.
    assert "org vs other, layer 2: 0.400 [0.300, 0.500], noise ceiling 0.800" in table
    assert "massive-dominated: read the figure without them" in table
    # No organism effect in this study: said, not hidden.
    assert "| Fine-tuning on narrow data induces EM | 11.3% EM at > 99% coherent | not run" in table
