"""`python -m diracbench.tables`: the paper's Table 1 for one dataset, as Markdown, LaTeX, CSV, HTML.

Rows: Dirac-PO, Dirac-DO, DPS, DDRM, PnP-ADMM, ADMM-TV (those configured), then the measurement
y as a reference row. Column groups: one per task (deblurring, inpainting), each with PSNR, SSIM,
LPIPS, FID, FD-VGG, data consistency (DC / sigma_1^2) and n. Every number is the `mean` of the
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

METHOD_ORDER = ("dirac-po", "dirac-do", "dps", "ddrm", "pnp-admm", "admm-tv")
DISPLAY = {
    "dirac-po": "Dirac-PO",
    "dirac-do": "Dirac-DO",
    "dps": "DPS",
    "ddrm": "DDRM",
    "pnp-admm": "PnP-ADMM",
    "admm-tv": "ADMM-TV",
    "y": "Measurement y (reference)",
}
TASK_TITLES = {"deblur": "Gaussian deblurring", "inpaint": "Inpainting"}


@dataclass(frozen=True)
class Column:
    metric: str
    title: str
    digits: int
    higher_better: bool | None  # None: no best value


COLUMNS = (
    Column("psnr", "PSNR↑", 2, True),
    Column("ssim", "SSIM↑", 4, True),
    Column("lpips", "LPIPS↓", 4, False),
    Column("fid", "FID↓", 2, False),
    Column("fd_vgg", "FD-VGG↓", 2, False),
    Column("dc_ratio", "DC/σ²", 2, None),
)
_TEX_TITLES = {"PSNR↑": r"PSNR$\uparrow$", "SSIM↑": r"SSIM$\uparrow$", "LPIPS↓": r"LPIPS$\downarrow$", "FID↓": r"FID$\downarrow$",
               "FD-VGG↓": r"FD-VGG$\downarrow$", "DC/σ²": r"DC/$\sigma_1^2$"}
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
    rows = [m for m in METHOD_ORDER if m in methods and m in present]
    rows += [m for m in methods if m not in METHOD_ORDER and m in present]  # future methods appear too
    missing = [m for m in methods if m not in present]
    if "y" in present:
        rows.append("y")
    agg["best"] = False
    for task in tasks:
        for col in COLUMNS:
            if col.higher_better is None:
                continue
            sel = (agg.task == task) & (agg.metric == col.metric) & agg.method.isin([m for m in rows if m != "y"])
            vals = agg.loc[sel, "mean"].astype(float)
            vals = vals[np.isfinite(vals)]
            if vals.empty:
                continue
            best = vals.max() if col.higher_better else vals.min()
            agg.loc[vals.index[vals == best], "best"] = True
    return Table(dataset, list(tasks), rows, agg, _footnotes(agg, tasks, rows), missing)


def _footnotes(agg: pd.DataFrame, tasks: Sequence[str], rows: Sequence[str]) -> list[str]:
    notes = []
    texts = sorted(set(agg[(agg.metric == "fd_vgg") & agg.method.isin(rows)]["note"]) - {""})
    notes += [f"{t}." for t in texts]
    fid = agg[(agg.metric == "fid") & agg.method.isin(rows)]
    unavailable = sorted(set(fid[~np.isfinite(fid["mean"].astype(float))]["note"]) - {""})
    notes += [f"FID n/a: {t}." for t in unavailable]
    available = sorted(set(fid[np.isfinite(fid["mean"].astype(float))]["note"]) - {""})
    notes += [f"FID: {t}." for t in available]
    dc = sorted(set(agg[(agg.metric == "dc") & agg.method.isin(rows)]["note"]) - {""})
    notes += [f"DC/σ²: {t}; no best value is marked." for t in dc]
    for task in tasks:
        n = agg[(agg.task == task) & (agg.metric == "psnr") & agg.method.isin(rows)].set_index("method")["n"]
        if len(set(n.astype(int))) > 1:
            full = int(n.max())
            fewer = ", ".join(f"{DISPLAY.get(m, m)} {int(k)}" for m, k in n.items() if int(k) < full)
            notes.append(f"{TASK_TITLES.get(task, task)}: not all methods scored all {full} test images ({fewer}); set-level metrics (FID, FD-VGG) of those rows compare only their images.")
    return notes


def _fmt(value: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _cells(table: Table, method: str, task: str) -> list[tuple[str, bool]]:
    out = []
    for col in COLUMNS:
        c = table.cell(task, method, col.metric)
        text = _fmt(float(c["mean"]), col.digits) if c is not None else ""
        if not text:
            text = "n/a" if (c is not None and col.metric == "fid") else "—"
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
        head += [f"{TASK_TITLES.get(task, task)} {c.title}" if i == 0 else c.title for i, c in enumerate(COLUMNS)] + ["n"]
    lines = [f"**{caption(table)}**", "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for method in table.methods:
        cells = [DISPLAY.get(method, method)]
        for task in table.tasks:
            cells += [f"**{t}**" if bold else t for t, bold in _cells(table, method, task)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {n}" for n in table.footnotes]
    if table.missing_methods:
        lines.append(f"- Configured but not yet scored (no reconstructions): {', '.join(DISPLAY.get(m, m) for m in table.missing_methods)}.")
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "σ": r"$\sigma$", "²": r"$^2$", "∞": r"$\infty$", "—": "--",
                "↑": r"$\uparrow$", "↓": r"$\downarrow$", "é": r"\'e", "≥": r"$\geq$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    ncol = len(COLUMNS) + 1
    spec = "l" + ("r" * ncol) * len(table.tasks)
    group = " & ".join(rf"\multicolumn{{{ncol}}}{{c}}{{{tex_escape(TASK_TITLES.get(t, t))}}}" for t in table.tasks)
    rules = " ".join(rf"\cmidrule(lr){{{2 + i * ncol}-{1 + (i + 1) * ncol}}}" for i in range(len(table.tasks)))
    titles = " & ".join(([_TEX_TITLES[c.title] for c in COLUMNS] + ["$n$"]) * len(table.tasks))
    body = []
    for method in table.methods:
        if method == "y":
            body.append(r"\midrule")
        cells = [tex_escape(DISPLAY.get(method, method))]
        for task in table.tasks:
            cells += [rf"\textbf{{{tex_escape(t)}}}" if bold else tex_escape(t) for t, bold in _cells(table, method, task)]
        body.append(" & ".join(cells) + r" \\")
    notes = list(table.footnotes)
    if table.missing_methods:
        notes.append(f"Configured but not yet scored: {', '.join(DISPLAY.get(m, m) for m in table.missing_methods)}.")
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
    head1 = "<th rowspan='2'>Method</th>" + "".join(f"<th colspan='{len(COLUMNS) + 1}'>{e(TASK_TITLES.get(t, t))}</th>" for t in table.tasks)
    head2 = "".join(f"<th>{e(c.title)}</th>" for c in COLUMNS) + "<th>n</th>"
    rows = []
    for method in table.methods:
        cells = [f"<td class='m'>{e(DISPLAY.get(method, method))}</td>"]
        for task in table.tasks:
            cells += [f"<td><b>{e(t)}</b></td>" if bold else f"<td>{e(t)}</td>" for t, bold in _cells(table, method, task)]
        rows.append(f"<tr class='{'ref' if method == 'y' else ''}'>" + "".join(cells) + "</tr>")
    notes = list(table.footnotes)
    if table.missing_methods:
        notes.append(f"Configured but not yet scored: {', '.join(DISPLAY.get(m, m) for m in table.missing_methods)}.")
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
    keep["display"] = keep.method.map(lambda m: DISPLAY.get(m, m))
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
