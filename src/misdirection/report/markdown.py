"""A small, safe markdown-to-HTML converter for summaries other modules write (the geometry suite's).

It knows headings, pipe tables, bullet lists, fenced code, ``**bold**`` and paragraphs; every piece
of text is escaped first, so nothing in the summary can become markup, a link or a script.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", str(escape(text)))


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner.removeprefix("|")
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(inner)]


def _table(lines: list[str]) -> str:
    rows = [_cells(line) for line in lines if not _RULE.match(line)]
    head, body = rows[0], rows[1:]
    out = "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
    out += "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f'<div class="scroll"><table>{out}</table></div>'


def to_html(markdown: str, shift: int = 0) -> Markup:
    """``markdown`` as escaped HTML; headings move ``shift`` levels down (capped at h6)."""
    lines = markdown.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(f"<pre>{escape(chr(10).join(lines[i + 1 : j]))}</pre>")
            i = j + 1
            continue
        if line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(_table(lines[i:j]))
            i = j
            continue
        if line.startswith(("- ", "* ")):
            j = i
            while j < len(lines) and lines[j].startswith(("- ", "* ")):
                j += 1
            out.append("<ul>" + "".join(f"<li>{_inline(x[2:])}</li>" for x in lines[i:j]) + "</ul>")
            i = j
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            level = min(6, len(heading.group(1)) + shift)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.strip():
            j = i
            while (
                j < len(lines)
                and lines[j].strip()
                and not re.match(r"^(#|\||- |\* |```)", lines[j].lstrip())
            ):
                j += 1
            out.append(f"<p>{_inline(' '.join(x.strip() for x in lines[i:j]))}</p>")
            i = j
            continue
        i += 1
    return Markup("\n".join(out))


def shift_headings(markdown: str, shift: int) -> str:
    """The same markdown with every heading ``shift`` levels deeper (to nest it in a section)."""
    return re.sub(
        r"^(#{1,6})(?=\s)",
        lambda m: "#" * min(6, len(m.group(1)) + shift),
        markdown,
        flags=re.MULTILINE,
    )
