"""Plain table writers (Markdown, LaTeX booktabs, HTML) for the small science tables.

Tables 2-3 and the claims table are lists of string cells; each writer returns the whole file's
text, so a table regenerates byte for byte from the same cells. Torch-free.
"""

from __future__ import annotations

import html
import re
from typing import Iterable, Sequence

# One escaper for every LaTeX table (Table 1 included). Multi-character keys (x̂ is x plus a
# combining circumflex) are matched before their first character, and a replacement is never
# escaped again, hence one regex pass instead of chained str.replace calls.
_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "ζ": r"$\zeta$", "σ": r"$\sigma$", "₀": r"$_0$", "₁": r"$_1$", "²": r"$^2$", "≤": r"$\le$", "≥": r"$\ge$",
    "≈": r"$\approx$", "×": r"$\times$", "∞": r"$\infty$", "x̂": r"$\hat{x}$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
    "→": r"$\to$", "†": r"$^\dagger$", "—": "---", "–": "--", "’": "'", "é": r"\'e",
}
_TEX_RE = re.compile("|".join(re.escape(k) for k in sorted(_TEX, key=len, reverse=True)))

# Markdown's plain `---` is its default (left) alignment; "l" keeps it so existing tables stay byte-identical.
_MD_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def tex_escape(text: object) -> str:
    """`text` as LaTeX text mode: specials escaped, the Unicode symbols the tables use as math or dashes."""
    return _TEX_RE.sub(lambda m: _TEX[m.group()], str(text))


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]], align: str | None = None, *, escape: bool = False) -> list[str]:
    """The lines of a Markdown pipe table: header, alignment separator, one line per row (no newlines).

    `align` has one letter per column: "l" (written `---`), "r" (`---:`) or "c" (`:---:`); None is
    all "l". Cells are not padded. With `escape`, a cell goes through str(), "|" becomes "\\|" and a
    newline a space, for free text; without it a cell is written as an f-string writes it
    (format(cell)), unescaped, since the callers' cells are numbers and names and some carry
    Markdown such as `**best**` or backticks.

    Raises ValueError when `align` or a row has another number of entries than `header`: a short
    row would shift every later cell into the wrong column without any error.
    """
    align = "l" * len(header) if align is None else align
    if len(align) != len(header) or set(align) - set(_MD_ALIGN):
        raise ValueError(f"align {align!r} needs one of 'l', 'r', 'c' per column ({len(header)} columns)")
    cell = _md_cell if escape else format

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(cell(c) for c in cells) + " |"

    lines = [line(header), "|" + "|".join(_MD_ALIGN[a] for a in align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells for {len(header)} columns: {list(row)!r}")
        lines.append(line(row))
    return lines


def to_markdown(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> str:
    lines = [f"**{title}**", "", *markdown_table(header, rows, escape=True)]
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def to_latex(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = (), label: str = "") -> str:
    cols = "l" * len(header)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{tex_escape(title)}}}"]
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [f"\\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\par\footnotesize " + r" \\ ".join(tex_escape(n) for n in notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> str:
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title></head><body>", f"<p><b>{html.escape(title)}</b></p>", "<table border=\"1\" cellspacing=\"0\" cellpadding=\"3\">"]
    out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    out.append("</table>")
    if notes:
        out.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
