"""HTML building blocks of the report: escaping, metric cells with their flags and notes, tables, the page shell.

No template engine: the page is small and every value goes through `esc`. A metric cell never shows a bare number
for a flagged value: "unreliable" entries carry a visible "N too small" flag and a footnote with the evaluate
stage's warning; "not computed" entries say so with a footnote giving the reason.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from ssmttm.report.inputs import NOT_REPORTED, OK, UNRELIABLE

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 12.5px; }
th, td { border: 1px solid #d0d0d0; padding: 3px 6px; vertical-align: top; text-align: left; }
th { background: #f2f2f2; position: sticky; top: 0; }
td.paper { background: #f6f3e8; } tr.paper-only td { color: #666; }
.scroll { overflow-x: auto; max-width: 100%; }
.v { font-weight: 600; } .ci { color: #555; white-space: nowrap; } .n { color: #888; font-size: 11px; }
.flag { background: #ffe3a3; color: #6b4500; border-radius: 3px; padding: 0 3px; font-size: 11px; white-space: nowrap; }
.nc { color: #a33; font-style: italic; white-space: nowrap; } .failed { color: #a33; }
.v, .n { white-space: nowrap; }  /* a metric cell keeps to one line: the table scrolls in its box instead */
.verdict-holds { color: #17632a; } .verdict-reversed { color: #8a1c1c; } .verdict-cannot { color: #555; }
.verdict-better { color: #17632a; }
.warn { background: #fff4d6; border-left: 4px solid #e0a100; padding: .3em .6em; }
ul.sentences li { margin: .25em 0; }
img.figure { max-width: 100%; border: 1px solid #ddd; }
audio { height: 32px; width: 240px; display: block; }
img.spectrogram { display: block; width: 240px; height: 64px; margin-top: 2px; border: 1px solid #ddd; }
figure.player { margin: 0; width: 242px; } figure.player figcaption { font-size: 12px; color: #333; }
table.prompt-grid th.prompt { width: 14em; min-width: 12em; font-weight: normal; font-style: italic; }
table.prompt-grid th { position: static; }
.caption-block { margin: .4em 0; } .caption-block > summary { cursor: pointer; }
.players { display: flex; flex-wrap: wrap; gap: .5em 1em; margin: .5em 0 1em; }
section#summary { background: #f7f9fc; border: 1px solid #d8e0ec; padding: .2em 1em .4em; }
section#summary h2 { margin-top: .4em; } ul.summary li { margin: .35em 0; }
details.not-computed { color: #555; margin: .4em 0; } details > summary { cursor: pointer; }
.notes li { font-size: 12px; color: #444; } .small { font-size: 12px; color: #555; }
code { background: #f4f4f4; padding: 0 3px; }
p, li { overflow-wrap: anywhere; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class Notes:
    """Numbered footnotes: each distinct text once, referenced by number wherever it applies."""

    def __init__(self, prefix: str = "note") -> None:
        self.prefix = prefix
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        number = self.texts.index(text) + 1
        return f'<sup><a href="#{self.prefix}-{number}">[{number}]</a></sup>'

    def render(self, title: str = "Notes") -> str:
        if not self.texts:
            return ""
        items = "".join(f'<li id="{self.prefix}-{i}">{esc(t)}</li>' for i, t in enumerate(self.texts, 1))
        return f'<p class="small"><b>{esc(title)}</b></p><ol class="notes">{items}</ol>'


def number(value: float | None) -> str:
    """4 significant digits, without exponents for thousands (an FD of 16960, not 1.696e+04)."""
    if value is None:
        return "—"
    if 1e3 <= abs(value) < 1e7:
        return f"{value:.0f}"
    return f"{value:.4g}"


def metric_cell(entry: dict[str, Any] | None, notes: Notes) -> str:
    """A metric entry as the inside of a table cell: value, interval, N, and its flag or reason."""
    if entry is None:
        return '<span class="n">—</span>'
    status = entry.get("status")
    if status == NOT_REPORTED:
        return f'<span class="n">n/a</span>{notes.mark(str(entry.get("reason")))}'
    if status not in (OK, UNRELIABLE) or entry.get("value") is None:
        reason = entry.get("reason") or "no value"
        return f'<span class="nc">not computed</span>{notes.mark(str(reason))}'
    ci = entry.get("ci")
    interval = f"[{number(ci[0])}, {number(ci[1])}]" if ci and None not in ci else "[no interval]"
    parts = [f'<span class="v">{number(entry["value"])}</span> <span class="ci">{esc(interval)}</span>']
    if entry.get("n") is not None:
        parts.append(f' <span class="n">N={esc(entry["n"])}</span>')
    if status == UNRELIABLE:
        warning = str(entry.get("warning") or "N too small")
        parts.insert(0, f'<span class="flag" title="{esc(warning)}">⚠ N too small</span>{notes.mark(warning)}<br>')
    return "".join(parts)


def table(header: Iterable[str], rows: Iterable[Iterable[str]], row_classes: Iterable[str] | None = None) -> str:
    """Cells are HTML already (escape text with `esc` first)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    classes = list(row_classes) if row_classes is not None else None
    body = []
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def page(title: str, body: str, css: str = CSS, script: str = "") -> str:
    script_tag = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{esc(title)}</title><style>{css}</style></head>\n<body>\n{body}\n{script_tag}\n</body></html>\n"
    )
