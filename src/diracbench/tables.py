"""`python -m diracbench.tables`: the paper's Table 1 for one dataset, as Markdown, LaTeX, CSV, HTML.

Rows: the configured methods in the method registry's order (Dirac-PO, Dirac-DO, DPS, DDRM,
PnP-ADMM, ADMM-TV, then any other registered method), then the measurement y as a reference row.
Column groups: one per task (deblurring, inpainting), each with the metric registry's table
columns (PSNR, SSIM, LPIPS, FID, FD-VGG, data consistency DC / sigma_1^2) and n. Every number is the `mean` of the
method's metrics/aggregate.csv, i.e. the mean of its per-image CSV; the CSV adds the bootstrap CI.
The best method per column is bold (the reference row does not compete; DC has no "best": a value
near 1 means consistent up to the noise, below 1 means the noise was fitted).
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from diracbench import cli
from diracbench.contracts import check_aggregate
from diracbench.errors import UserError

from diracbench.methods.registry import display_name, ordered
from diracbench.metrics.registry import Metric, footnote_metrics, set_metrics, table_columns
from diracbench.tasks import task_title
from diracbench.textables import markdown_table, tex_escape

REFERENCE = "y"
REFERENCE_DISPLAY = "Measurement y (reference)"
# Table 1's metric columns come from the metric registry (diracbench/metrics/registry.py), read
# when a table is built, so a metric registered there is a column here.
def columns() -> tuple[Metric, ...]:
    return table_columns()


def display(method: str) -> str:
    """A row's name: the registry's display name; the measurement's reference row."""
    return REFERENCE_DISPLAY if method == REFERENCE else display_name(method)


AGG_COLUMNS = ("dataset", "task", "method", "metric", "n", "mean", "ci_low", "ci_high", "ci_level", "note")


def read_aggregates(paths: Sequence[Path]) -> pd.DataFrame:
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} does not exist; run the 'metrics' rule for it first")
        try:
            df = pd.read_csv(path, keep_default_na=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not a readable CSV ({err}); delete it and rerun the 'metrics' rule") from None
        missing = [c for c in AGG_COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"{path} lacks the columns {missing}; delete it and rerun the 'metrics' rule")
        check_aggregate(path, df["metric"])
        frames.append(df[list(AGG_COLUMNS)])
    if not frames:
        raise UserError("no metrics/aggregate.csv given; run the 'metrics' rule first")
    out = pd.concat(frames, ignore_index=True)
    out["note"] = out["note"].fillna("").astype(str)
    dup = out.duplicated(["dataset", "task", "method", "metric"])
    if dup.any():
        raise UserError(f"the aggregates repeat {out[dup][['task', 'method', 'metric']].drop_duplicates().values.tolist()[:3]}; pass each method's aggregate.csv once")
    return out


@dataclass
class Table:
    dataset: str
    tasks: list[str]
    methods: list[str]  # data rows, in order (reference row last when present)
    values: pd.DataFrame  # long format with a `best` column
    footnotes: list[str]
    missing_methods: list[str]

    def cell(self, task: str, method: str, metric: str) -> pd.Series | None:
        sel = self.values[(self.values.task == task) & (self.values.method == method) & (self.values.metric == metric)]
        return None if sel.empty else sel.iloc[0]


def build_table(agg: pd.DataFrame, dataset: str, tasks: Sequence[str], methods: Sequence[str]) -> Table:
    agg = agg[agg.dataset == dataset].copy()
    if agg.empty:
        raise UserError(f"no aggregates for dataset {dataset!r}")
    present = set(agg.method)
    rows = ordered([m for m in methods if m in present])  # registry order; unregistered ones last
    missing = [m for m in methods if m not in present]
    if REFERENCE in present:
        rows.append(REFERENCE)
    agg["best"] = False
    for task in tasks:
        for col in columns():
            if col.higher_is_better is None:
                continue
            sel = (agg.task == task) & (agg.metric == col.name) & agg.method.isin([m for m in rows if m != REFERENCE])
            vals = agg.loc[sel, "mean"].astype(float)
            vals = vals[np.isfinite(vals)]
            if vals.empty:
                continue
            best = vals.max() if col.higher_is_better else vals.min()
            agg.loc[vals.index[vals == best], "best"] = True
    return Table(dataset, list(tasks), rows, agg, _footnotes(agg, tasks, rows), missing)


def _footnotes(agg: pd.DataFrame, tasks: Sequence[str], rows: Sequence[str]) -> list[str]:
    notes = []
    for m in footnote_metrics():
        sel = agg[(agg.metric == m.name) & agg.method.isin(rows)]
        if not m.caption or sel.empty:
            continue
        if m.na_caption:
            finite = np.isfinite(sel["mean"].astype(float))
            notes += [m.na_caption.format(note=t) for t in sorted(set(sel[~finite]["note"]) - {""})]
            notes += [m.caption.format(note=t) for t in sorted(set(sel[finite]["note"]) - {""})]
        else:
            notes += [m.caption.format(note=t) for t in sorted(set(sel["note"]) - {""})]
    for task in tasks:
        n = agg[(agg.task == task) & (agg.metric == "psnr") & agg.method.isin(rows)].set_index("method")["n"]
        if len(set(n.astype(int))) > 1:
            full = int(n.max())
            fewer = ", ".join(f"{display(m)} {int(k)}" for m, k in n.items() if int(k) < full)
            set_level = ", ".join(c.label or c.name for c in columns() if c.name in set_metrics())
            notes.append(f"{task_title(task)}: not all methods scored all {full} test images ({fewer}); set-level metrics ({set_level}) of those rows compare only their images.")
    return notes


def _fmt(value: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _cells(table: Table, method: str, task: str) -> list[tuple[str, bool]]:
    out = []
    for col in columns():
        c = table.cell(task, method, col.name)
        text = _fmt(float(c["mean"]), col.digits) if c is not None else ""
        if not text:
            text = "n/a" if (c is not None and col.na_caption) else "—"
        out.append((text, bool(c is not None and c["best"])))
    c = table.cell(task, method, "psnr")
    out.append((str(int(c["n"])) if c is not None else "—", False))
    return out


def caption(table: Table) -> str:
    """The caption states the LPIPS protocol (backbone, small-image upsampling) as the paper's would."""
    lpips = sorted(set(table.values[(table.values.metric == "lpips") & table.values.method.isin(table.methods)]["note"]) - {""})
    return (
        f"Table 1 ({table.dataset}, test split): mean over test images of each metric; best method per column in bold. "
        "Outputs clipped to [0, 1]. " + "".join(f"{t}. " for t in lpips) + "Bootstrap confidence intervals are in the CSV."
    )


def to_markdown(table: Table) -> str:
    head = ["Method"]
    for task in table.tasks:
        head += [f"{task_title(task)} {c.title}" if i == 0 else c.title for i, c in enumerate(columns())] + ["n"]
    rows = []
    for method in table.methods:
        cells = [display(method)]
        for task in table.tasks:
            cells += [f"**{t}**" if bold else t for t, bold in _cells(table, method, task)]
        rows.append(cells)
    lines = [f"**{caption(table)}**", "", *markdown_table(head, rows, "l" + "r" * (len(head) - 1)), ""]
    lines += [f"- {n}" for n in table.footnotes]
    if table.missing_methods:
        lines.append(f"- Configured but not yet scored (no reconstructions): {', '.join(display(m) for m in table.missing_methods)}.")
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    ncol = len(columns()) + 1
    spec = "l" + ("r" * ncol) * len(table.tasks)
    group = " & ".join(rf"\multicolumn{{{ncol}}}{{c}}{{{tex_escape(task_title(t))}}}" for t in table.tasks)
    rules = " ".join(rf"\cmidrule(lr){{{2 + i * ncol}-{1 + (i + 1) * ncol}}}" for i in range(len(table.tasks)))
    titles = " & ".join(([c.tex for c in columns()] + ["$n$"]) * len(table.tasks))
    body = []
    for method in table.methods:
        if method == REFERENCE:
            body.append(r"\midrule")
        cells = [tex_escape(display(method))]
        for task in table.tasks:
            cells += [rf"\textbf{{{tex_escape(t)}}}" if bold else tex_escape(t) for t, bold in _cells(table, method, task)]
        body.append(" & ".join(cells) + r" \\")
    notes = list(table.footnotes)
    if table.missing_methods:
        notes.append(f"Configured but not yet scored: {', '.join(display(m) for m in table.missing_methods)}.")
    lines = [
        "% Generated by python -m diracbench.tables; needs \\usepackage{booktabs}.",
        r"\begin{table*}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(caption(table))}}}",
        rf"\label{{tab:results-{tex_escape(table.dataset)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        rf" & {group} \\",
        rules,
        rf"Method & {titles} \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        "",
        r"\vspace{2pt}\begin{minipage}{0.95\textwidth}\footnotesize",
        *[tex_escape(n) + r"\\" for n in notes],
        r"\end{minipage}",
        r"\end{table*}",
    ]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    e = html.escape
    head1 = "<th rowspan='2'>Method</th>" + "".join(f"<th colspan='{len(columns()) + 1}'>{e(task_title(t))}</th>" for t in table.tasks)
    head2 = "".join(f"<th>{e(c.title)}</th>" for c in columns()) + "<th>n</th>"
    rows = []
    for method in table.methods:
        cells = [f"<td class='m'>{e(display(method))}</td>"]
        for task in table.tasks:
            cells += [f"<td><b>{e(t)}</b></td>" if bold else f"<td>{e(t)}</td>" for t, bold in _cells(table, method, task)]
        rows.append(f"<tr class='{'ref' if method == 'y' else ''}'>" + "".join(cells) + "</tr>")
    notes = list(table.footnotes)
    if table.missing_methods:
        notes.append(f"Configured but not yet scored: {', '.join(display(m) for m in table.missing_methods)}.")
    style = (
        "body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} th,td{padding:3px 8px;text-align:right}"
        "td.m{text-align:left} thead{border-bottom:1px solid #444} table{border-top:2px solid #222;border-bottom:2px solid #222}"
        "tr.ref{border-top:1px solid #999;color:#555} caption{caption-side:top;text-align:left;margin-bottom:6px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(table.dataset)}</title><style>{style}</style></head><body>"
        f"<table><caption>{e(caption(table))}</caption><thead><tr>{head1}</tr><tr>{head2 * len(table.tasks)}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table><ul>{''.join(f'<li>{e(n)}</li>' for n in notes)}</ul></body></html>\n"
    )


def to_csv_frame(table: Table) -> pd.DataFrame:
    keep = table.values[table.values.method.isin(table.methods) & table.values.task.isin(table.tasks)].copy()
    keep["display"] = keep.method.map(display)
    order = {m: i for i, m in enumerate(table.methods)}
    keep = keep.sort_values(["task", "method", "metric"], key=lambda s: s.map(order) if s.name == "method" else s)
    return keep[["dataset", "task", "method", "display", "metric", "n", "mean", "ci_low", "ci_high", "ci_level", "best", "note"]]


def metric_devices(aggregates: Sequence[Path]) -> str:
    """Where the table's numbers were computed: the devices the metrics jobs recorded."""
    import json

    devices = set()
    for path in aggregates:
        record = Path(path).with_name("per_image.provenance.json")
        if record.is_file():
            try:
                devices.add(str(json.loads(record.read_text()).get("device")))
            except json.JSONDecodeError:
                pass  # the metrics rule rewrites it; a table never fails over provenance
    return ", ".join(sorted(devices)) or "unknown"


def commit_footnote() -> str:
    """Which code made the table, so a number can be traced back (details in provenance.json)."""
    from diracbench.provenance import git_state

    git = git_state()
    if not git["commit"]:
        return "Made outside a git checkout (no commit recorded); see provenance.json."
    dirty = " with uncommitted changes" if git["dirty"] else ""
    return f"Made by diracbench commit {git['commit'][:10]}{dirty}; settings, versions and seeds in provenance.json."


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.tables", __doc__.splitlines()[0])
    parser.add_argument("--aggregates", nargs="+", required=True, type=Path, help="metrics/aggregate.csv files (any methods, tasks)")
    parser.add_argument("--out-stem", required=True, type=Path, help="results/tables/<dataset> (writes .md .tex .csv .html)")
    args = parser.parse_args(argv)
    s = args.settings
    for key in ("dataset", "tasks", "methods"):
        if key not in s:
            raise UserError(f"--settings lacks {key!r}")
    from diracbench.io import OutputSet
    from diracbench.provenance import write_provenance

    start = time.perf_counter()
    table = build_table(read_aggregates(args.aggregates), s["dataset"], s["tasks"], s["methods"])
    table.footnotes.append(commit_footnote())
    stem = args.out_stem
    with OutputSet() as out:
        out.write_text(stem.with_suffix(".md"), to_markdown(table))
        out.write_text(stem.with_suffix(".tex"), to_latex(table))
        out.write_text(stem.with_suffix(".html"), to_html(table))
        to_csv_frame(table).to_csv(out.path(stem.with_suffix(".csv")), index=False, float_format="%.8g")
    print(to_markdown(table), flush=True)
    write_provenance(stem.with_suffix(".csv"), "tables", s, device=metric_devices(args.aggregates), seeds=s.get("seed"),
                     extra={"inputs": [str(p) for p in args.aggregates], "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    cli.run(main, stage="diracbench.tables")
