"""The leaderboard as one self-contained HTML page: per table a sortable scores table and a sortable cost table
(a few lines of inline JS; reference rows stay in the footer), so every column fits a 1400 px window, and the
plots embedded as base64 PNG at full width. No network fetches, no build time, so equal inputs
give equal bytes."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { padding: 0.3em 0.6em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; overflow-wrap: anywhere; min-width: 4.5em; max-width: 7em; }
td:first-child { white-space: normal; min-width: 12em; max-width: 22em; }
th:first-child, td:first-child, th:last-child, td:last-child { text-align: left; }
th { cursor: pointer; background: #f3f3f3; user-select: none; }
th[data-dir=asc]::after { content: " ▲"; }
th[data-dir=desc]::after { content: " ▼"; }
tfoot td { font-style: italic; color: #555; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
.note { color: #555; max-width: 60em; }
"""

SORT_JS = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("thead th").forEach((th, col) => th.addEventListener("click", () => {
    const asc = th.dataset.dir !== "asc";
    table.querySelectorAll("thead th").forEach((h) => delete h.dataset.dir);
    th.dataset.dir = asc ? "asc" : "desc";
    const key = (row) => row.cells[col].dataset.sort;
    const rows = [...table.tBodies[0].rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === undefined || y === undefined) return (x === undefined) - (y === undefined);
      const d = isNaN(x) || isNaN(y) ? x.localeCompare(y) : x - y;
      return asc ? d : -d;
    });
    table.tBodies[0].append(...rows);
  }));
}
"""


@dataclass(frozen=True)
class Cell:
    """A displayed value and the key a sortable table orders it by (None: no key, sorts last)."""

    text: str
    sort: float | str | None = None


@dataclass
class Section:
    """One table's part of the page: its notes, its table (reference rows in the footer) and its plots (file
    names into the plots dict)."""

    title: str
    headers: list[str]
    rows: list[list[Cell]]
    footer: list[list[Cell]]
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    costs_from: int | None = None  # the first cost column: from it on, the columns go to a second table


def _columns(rows: list[list[Cell]], keep: list[int]) -> list[list[Cell]]:
    return [[row[i] for i in keep] for row in rows]


def _split(section: Section) -> list[tuple[str, list[str], list[list[Cell]], list[list[Cell]]]]:
    """(caption, headers, rows, footer) of the section's tables: scores, then cost (each led by the first column)."""
    whole = ("", section.headers, section.rows, section.footer)
    if section.costs_from is None:
        return [whole]
    width = len(section.headers)
    parts = [("scores", list(range(section.costs_from))), ("cost per run", [0, *range(section.costs_from, width)])]
    return [
        (caption, [section.headers[i] for i in keep], _columns(section.rows, keep), _columns(section.footer, keep))
        for caption, keep in parts
    ]


def _td(cell: Cell) -> str:
    key = "" if cell.sort is None else f' data-sort="{escape(str(cell.sort))}"'
    return f"<td{key}>{escape(cell.text)}</td>"


def _table(caption: str, header_names: list[str], rows: list[list[Cell]], footer: list[list[Cell]]) -> list[str]:
    headers = "".join(f"<th>{escape(h)}</th>" for h in header_names)
    lines = ['<div class="scroll"><table class="sortable">']
    lines += [f"<caption>{escape(caption)}</caption>"] if caption else []
    lines += [f"<thead><tr>{headers}</tr></thead>", "<tbody>"]
    lines += ["<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows]
    lines.append("</tbody>")
    if footer:
        body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in footer)
        lines.append(f"<tfoot>{body}</tfoot>")
    lines.append("</table></div>")
    return lines


def render_html(sections: list[Section], note: str, problems: list[str], plots: dict[str, bytes], intro: str) -> str:
    """The page: intro and note, one table and its plots per section, then the records skipped."""
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><title>KD Harness leaderboard</title>',
        f"<style>{CSS}</style></head>",
        "<body>",
        "<h1>Leaderboard</h1>",
        f'<p class="note">{escape(intro)}</p>',
        f'<p class="note">{escape(note)}</p>',
    ]
    if not sections:
        lines.append("<p>No run records yet.</p>")
    for section in sections:
        lines += ["<section>", f"<h2>{escape(section.title)}</h2>"]
        lines += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
        for part in _split(section):
            lines += _table(*part)
        lines.append('<div class="plots">')
        for name in section.plots:
            data = base64.b64encode(plots[name]).decode("ascii")
            lines.append(
                f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{escape(name)}</figcaption></figure>"
            )
        lines += ["</div>", "</section>"]
    if problems:
        lines += ["<h2>Skipped records</h2>", "<ul>", *(f"<li>{escape(p)}</li>" for p in problems), "</ul>"]
    lines += [f"<script>{SORT_JS}</script>", "</body>", "</html>", ""]
    return "\n".join(lines)
