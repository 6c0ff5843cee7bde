"""Plain table writers (Markdown, LaTeX booktabs, HTML) for the small science tables.

Tables 2-3 and the claims table are lists of string cells; each writer returns the whole file's
text, so a table regenerates byte for byte from the same cells. Torch-free.
"""

from __future__ import annotations

import html
from typing import Sequence

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"Δ": r"$\Delta$", "ζ": r"$\zeta$", "σ": r"$\sigma$", "₁": r"$_1$", "²": r"$^2$", "≤": r"$\le$", "≥": r"$\ge$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "—": "---", "–": "--", "×": r"$\times$", "x̂": r"$\hat{x}$", "≈": r"$\approx$", "₀": r"$_0$", "†": r"$^\dagger$", "→": r"$\to$", "’": "'"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX_ESCAPES.get(c, c) for c in str(text))
    for k, v in _TEX_UNICODE.items():
        out = out.replace(k, v)
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
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
