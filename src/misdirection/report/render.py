"""Render a run's ``results.json`` as markdown and a self-contained HTML page.

The page mirrors the papers: EM and coherence of base and organisms with intervals, steering
curves, the ablation and transfer tables with random controls, per-layer cosines, the LoRA probe
table and the geometry summary; every number says which judge produced it, and effects whose
intervals overlap are reported as null rather than hidden.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from misdirection.report.figures import draw_all
from misdirection.study.store import atomic_write_text


def pct(share: dict[str, Any] | None) -> str:
    """``12.5% [8.1, 17.0]`` for a share dict with value/low/high (None-safe)."""
    if not share or share.get("value") is None:
        return "n/a"
    text = f"{100 * share['value']:.1f}%"
    if share.get("low") is not None and share.get("high") is not None:
        text += f" [{100 * share['low']:.1f}, {100 * share['high']:.1f}]"
    return text


def verdict(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Whether two shares differ beyond their 95% intervals."""
    if not before or not after or before.get("value") is None or after.get("value") is None:
        return "not measurable"
    if after["high"] < before["low"]:
        return "lower (intervals do not overlap)"
    if after["low"] > before["high"]:
        return "higher (intervals do not overlap)"
    return "no clear effect (intervals overlap)"


def versus_random(row: dict[str, Any]) -> str:
    """Whether the direction's EM reduction beats every norm-matched random direction's."""
    red = row.get("reduction") or {}
    randoms = [
        rc["reduction"]["value"]
        for rc in row.get("random", [])
        if rc.get("reduction") and rc["reduction"].get("value") is not None
    ]
    if red.get("value") is None:
        return "no EM to reduce"
    if not randoms:
        return "no random control run"
    if red.get("low") is not None and red["low"] > max(randoms):
        return "beyond every random control"
    return "not distinguishable from random directions"


def _reduction(red: dict[str, Any] | None) -> str:
    if not red or red.get("value") is None:
        return "n/a (no EM before ablation)"
    text = f"{100 * red['value']:.0f}%"
    if red.get("low") is not None and red.get("high") is not None:
        text += f" [{100 * red['low']:.0f}, {100 * red['high']:.0f}]"
    return text


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
        )
    return "\n".join(lines)


def build_markdown(
    results: dict[str, Any], figures: dict[str, Path], figure_prefix: str = "figures/"
) -> str:
    """The report as markdown; figures are referenced as ``figure_prefix + file name``."""
    judge = results.get("judge", {})
    out: list[str] = [
        f"# EM study: {results.get('study', 'study')}",
        "",
        (
            f"Base model **{results.get('base_model', '?')}**, seed {results.get('seed', 0)}, "
            f"run {results.get('created', '')}. Every score below comes from the judge "
            f"**{judge.get('name', '?')}** (rubrics: {', '.join(judge.get('rubrics', []))}). "
            f"{judge.get('notice', '')}"
        ),
        "",
    ]
    flags = judge.get("flags", {})
    if flags.get("any"):
        kinds = ", ".join(
            f"{kind} {count}" for kind, count in flags.items() if kind not in ("n", "any")
        )
        sentence = (
            f"The judge flagged {flags['any']} of {flags.get('n', '?')} answers as unlike its "
            f"training data ({kinds}); their scores are extrapolations."
        )
        out.extend([sentence, ""])
    for note in results.get("notes", []):
        out.append(f"> {note}")
    out.append("")

    def fig(name: str, caption: str) -> None:
        if name in figures:
            out.extend([f"![{caption}]({figure_prefix}{figures[name].name})", ""])

    # --- Organisms and evaluation
    out += ["## EM and coherence of base and organisms", ""]
    evals = [e for e in results.get("evaluations", []) if e["kind"] in ("base", "organism")]
    base = next((e for e in evals if e["kind"] == "base"), None)
    rows = []
    for e in evals:
        s = e["summary"]
        vs_base = "" if e is base or base is None else verdict(base["summary"]["em"], s["em"])
        rows.append(
            [
                e["condition"],
                s["n"],
                pct(s["em"]),
                pct(s["coherent"]),
                f"{s['n_null_aligned']}/{s['n_null_coherent']}",
                vs_base or "reference",
                e.get("judge", judge.get("name", "")),
            ]
        )
    out.append(
        _table(
            [
                "condition",
                "answers",
                "EM share [95% CI]",
                "coherent share [95% CI]",
                "null aligned/coherent",
                "EM vs base",
                "judge",
            ],
            rows,
        )
    )
    out.append("")
    fig("em_coherence", "EM and coherence with 95% bootstrap intervals")
    training = results.get("training", [])
    if training:
        out += ["### Training", ""]
        out.append(
            _table(
                [
                    "organism",
                    "recipe",
                    "dataset",
                    "adapted layers",
                    "steps",
                    "seconds",
                    "held-out log-lik before -> after",
                ],
                [
                    [
                        t["organism"],
                        t["recipe"],
                        t["dataset"],
                        t.get("layers", ""),
                        t.get("steps", ""),
                        f"{t.get('seconds', 0):.0f}",
                        f"{t.get('heldout_loglik_before', float('nan')):.3f} -> {t.get('heldout_loglik_after', float('nan')):.3f}",
                    ]
                    for t in training
                ],
            )
        )
        out.append("")
        fig("training", "Training loss")

    # --- Steering
    steering = results.get("steering") or {}
    if steering.get("points"):
        out += ["## Steering the base model with the direction", ""]
        base_em = base["summary"]["em"] if base else None
        out.append(
            _table(
                ["layer", "scale", "EM share", "coherent share", "EM vs unsteered base"],
                [
                    [
                        p["layer"],
                        p["scale"],
                        pct(p["em"]),
                        pct(p["coherent"]),
                        verdict(base_em, p["em"]),
                    ]
                    for p in steering["points"]
                ],
            )
        )
        out.append("")
        fig("steering", "Steering curves")

    # --- Ablation and transfer
    ablation = results.get("ablation") or []
    if ablation:
        for title, subset in (
            (
                "Ablation of the direction from its own organism",
                [r for r in ablation if r["target"] == r["direction"]],
            ),
            (
                "Transfer: ablating one organism's direction from other organisms",
                [r for r in ablation if r["target"] != r["direction"]],
            ),
        ):
            if not subset:
                continue
            out += [f"## {title}", ""]
            rows = []
            for r in subset:
                randoms = r.get("random", [])
                rand_text = (
                    ", ".join(_reduction(rc.get("reduction")) for rc in randoms) or "none run"
                )
                rows.append(
                    [
                        r["target"],
                        r["direction"],
                        r["mode"],
                        pct(r["em_before"]),
                        pct(r["em"]),
                        _reduction(r.get("reduction")),
                        rand_text,
                        f"{verdict(r['em_before'], r['em'])}; {versus_random(r)}",
                    ]
                )
            out.append(
                _table(
                    [
                        "target",
                        "direction from",
                        "mode",
                        "EM before",
                        "EM after",
                        "% reduction [CI]",
                        "random-direction reductions",
                        "verdict",
                    ],
                    rows,
                )
            )
            out.append("")
        fig("ablation", "Ablation and random controls")

    # --- Cosines
    cosine = results.get("cosine") or {}
    if cosine.get("pairs"):
        out += ["## Per-layer cosine between organisms' directions", ""]
        rows = []
        for p in cosine["pairs"]:
            vals = p["per_layer"]
            best = max(range(len(vals)), key=lambda i: vals[i])
            rows.append(
                [
                    p["a"],
                    p["b"],
                    f"{sum(vals) / len(vals):.3f}",
                    f"{vals[best]:.3f} (layer {best})",
                    f"{vals[len(vals) // 2]:.3f}",
                ]
            )
        out.append(
            _table(["organism A", "organism B", "mean over layers", "max", "middle layer"], rows)
        )
        out.append("")
        fig("cosine", "Per-layer cosine similarity")

    # --- LoRA
    lora = results.get("lora")
    if lora:
        out += ["## Rank-1 LoRA adapters: probes on adapter scalars", ""]
        if lora.get("error"):
            out.append(f"Not measurable: {lora['error']}")
        for probe in lora.get("probes", []):
            out.append(
                f"**{probe['name']}**: accuracy {probe.get('accuracy_mean', float('nan')):.3f} "
                f"± {probe.get('accuracy_std', float('nan')):.3f}, AUC {probe.get('auc_mean', float('nan')):.3f} "
                f"± {probe.get('auc_std', float('nan')):.3f} (n={probe.get('n', '?')})"
            )
            out.append("")
        if lora.get("adapters"):
            out.append(
                _table(
                    ["adapter", "classification", "evidence"],
                    [
                        [a["adapter"], a["classification"], a.get("evidence", "")]
                        for a in lora["adapters"]
                    ],
                )
            )
            out.append("")
        for line in lora.get("notes", []):
            out.append(f"- {line}")
        out.append("")
        if lora.get("b_cosines"):
            out += ["**B vectors against the mean-diff direction at their layer**", ""]
            out.append(
                _table(
                    ["adapter", "layer", "cosine(B, direction)"],
                    [[b["adapter"], b["layer"], f"{b['cosine']:.3f}"] for b in lora["b_cosines"]],
                )
            )
            out.append("")
        if lora.get("adapter_scaling"):
            out += ["**Adapter steering** (chosen adapters scaled, others untouched)", ""]
            out.append(
                _table(
                    ["scaling", "EM before", "EM after", "coherent after", "verdict"],
                    [
                        [
                            a["scaling"],
                            pct(a["em_before"]),
                            pct(a["em"]),
                            pct(a["coherent"]),
                            verdict(a["em_before"], a["em"]),
                        ]
                        for a in lora["adapter_scaling"]
                    ],
                )
            )
            out.append("")

    # --- Geometry
    geometry = results.get("geometry")
    if geometry:
        out += ["## Geometry of the extracted directions", ""]
        # The suite's summary has its own headings: nest them under this section.
        out.append(
            "\n".join(
                "#" + line if line.startswith("##") else line
                for line in geometry.get("summary_markdown", "").splitlines()
                if not line.startswith("# ")
            )
        )
        out.append("")
        for figure in geometry.get("figures", []):
            out.extend([f"![{Path(figure).stem}]({figure_prefix}{Path(figure).name})", ""])

    # --- Examples
    examples = results.get("examples", [])
    if examples:
        out += ["## Example answers", ""]
        out.append(
            _table(
                ["condition", "question", "answer", "aligned", "coherent"],
                [
                    [
                        x["condition"],
                        x["question"][:80],
                        x["answer"][:240],
                        "null" if x.get("aligned") is None else f"{x['aligned']:.0f}",
                        "null" if x.get("coherent") is None else f"{x['coherent']:.0f}",
                    ]
                    for x in examples
                ],
            )
        )
        out.append("")

    # --- Provenance
    out += ["## Judges, configuration and versions", ""]
    out.append(
        _table(
            ["number", "produced by"],
            [[k, v] for k, v in judge.get("provenance", {}).items()]
            or [["all scores", judge.get("name", "?")]],
        )
    )
    out += [
        "",
        "```yaml",
        results.get("config_yaml", json.dumps(results.get("config", {}), indent=2)),
        "```",
        "",
    ]
    out.append(
        _table(["library", "version"], [[k, v] for k, v in results.get("versions", {}).items()])
    )
    out.append("")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.5rem; color: #1b1f23; line-height: 1.45; }
h1 { border-bottom: 2px solid #c0392b; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .88rem; }
th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top;
         max-width: 28rem; overflow-wrap: anywhere; }
th { background: #f3f4f6; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .8rem; }
blockquote { border-left: 4px solid #e67e22; margin: .5rem 0; padding: .2rem .8rem; background: #fdf2e9; }
"""


def _inline(text: str) -> str:
    text = html.escape(text)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def markdown_to_html(markdown: str, images: dict[str, Path], title: str) -> str:
    """A small converter for the markdown we generate (headings, tables, images, code, quotes)."""
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            body.append(f"<pre>{html.escape(chr(10).join(block))}</pre>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            i -= 1
            cells = [
                [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r)[1:-1]]
                for r in rows
            ]
            head, data = cells[0], [c for c in cells[2:]]
            table = "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
            table += "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in data
            )
            body.append(f'<div class="scroll"><table>{table}</table></div>')
        elif line.startswith("!["):
            match = re.match(r"!\[(.*?)\]\((.*?)\)", line)
            if match:
                name = Path(match.group(2)).name
                path = images.get(name)
                if path and path.is_file():
                    data = base64.b64encode(path.read_bytes()).decode("ascii")
                    body.append(
                        f'<img alt="{html.escape(match.group(1))}" src="data:image/png;base64,{data}">'
                    )
        elif line.startswith("> "):
            body.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.startswith("- "):
            body.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )


def render_report(run_dir: str | Path) -> dict[str, Path]:
    """(Re-)render ``RUN/report/report.md`` and ``report.html`` from ``RUN/results.json``."""
    from misdirection.errors import DataError

    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise DataError(f"{run_dir} has no results.json: is it a run folder of `misdirection run`?")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    report_dir = run_dir / "report"
    figures = draw_all(results, report_dir / "figures")
    images = {p.name: p for p in figures.values()}
    for extra in (results.get("geometry") or {}).get("figures", []):
        path = run_dir / extra
        if path.is_file():
            images[path.name] = path
    markdown = build_markdown(results, figures)
    # The markdown references geometry figures by name; copy them beside the report's figures.
    for name, path in images.items():
        target = report_dir / "figures" / name
        if path != target:
            target.write_bytes(path.read_bytes())
    atomic_write_text(report_dir / "report.md", markdown)
    page = markdown_to_html(markdown, images, title=f"EM study: {results.get('study', '')}")
    atomic_write_text(report_dir / "report.html", page)
    return {
        "markdown": report_dir / "report.md",
        "html": report_dir / "report.html",
        "figures": report_dir / "figures",
    }
