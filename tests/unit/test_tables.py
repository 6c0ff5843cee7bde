"""Table 1: complete rows/columns, bold on the true best, numbers equal the per-image means."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diracbench.errors import UserError
from diracbench.tables import build_table, columns, display, main as tables_main, read_aggregates, to_latex, to_markdown

METHODS = ["dirac-po", "dirac-do", "dps", "ddrm", "pnp-admm", "admm-tv"]
METRICS = ["psnr", "ssim", "lpips", "dc", "dc_ratio", "nfe", "seconds", "fd_vgg", "fid"]


def synthetic_aggregates(tmp_path: Path, values: dict, n: dict | None = None, fid_note: str = "unavailable: no Inception-v3 weights offline") -> list[Path]:
    """aggregate.csv files with given means: values[(task, method, metric)] = mean."""
    paths = []
    for task in ("deblur", "inpaint"):
        for method in METHODS + ["y"]:
            rows = []
            for metric in METRICS:
                mean = values.get((task, method, metric), 1.0)
                rows.append({"dataset": "photos", "task": task, "method": method, "metric": metric, "n": (n or {}).get(method, 8),
                             "mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "ci_level": 0.95,
                             "note": fid_note if metric == "fid" else ("LPIPS v0.1 (vgg); 32 px images upsampled 2x (bilinear)" if metric == "lpips" else "")})
            path = tmp_path / task / method / "aggregate.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(path, index=False)
            paths.append(path)
    return paths


def _values(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vals = {}
    for task in ("deblur", "inpaint"):
        for method in METHODS + ["y"]:
            vals[(task, method, "psnr")] = rng.uniform(20, 30)
            vals[(task, method, "ssim")] = rng.uniform(0.5, 0.9)
            vals[(task, method, "lpips")] = rng.uniform(0.1, 0.5)
            vals[(task, method, "fd_vgg")] = rng.uniform(10, 100)
            vals[(task, method, "fid")] = math.nan
            vals[(task, method, "dc_ratio")] = rng.uniform(0.8, 1.5)
    # The reference row is better than every method on PSNR: it must still not be bold.
    vals[("deblur", "y", "psnr")] = 99.0
    return vals


def test_rows_columns_complete_and_bold_on_true_best(tmp_path: Path) -> None:
    vals = _values()
    table = build_table(read_aggregates(synthetic_aggregates(tmp_path, vals)), "photos", ["deblur", "inpaint"], METHODS)
    assert table.methods == METHODS + ["y"]
    md = to_markdown(table)
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert len(rows) == 7
    assert header.count("PSNR↑") == 2 and header.count("FD-VGG↓") == 2 and header.count("FID↓") == 2 and header.count("DC/σ²") == 2
    for row, method in zip(rows, METHODS + ["y"]):
        assert row.startswith(f"| {display(method)} |")
        assert len(row.strip("|").split("|")) == 1 + 2 * (len(columns()) + 1)
    for task in ("deblur", "inpaint"):
        for metric, better in (("psnr", max), ("ssim", max), ("lpips", min), ("fd_vgg", min)):
            best = better(METHODS, key=lambda m: vals[(task, m, metric)])
            bold = table.values[(table.values.task == task) & (table.values.metric == metric) & table.values.best]
            assert list(bold.method) == [best], (task, metric)
    assert not table.values[(table.values.method == "y")].best.any()
    assert not table.values[table.values.metric.isin(["dc_ratio", "fid"])].best.any()
    # Bold in the rendered tables too: the best deblurring PSNR, formatted.
    best_psnr = max(vals[("deblur", m, "psnr")] for m in METHODS)
    assert f"**{best_psnr:.2f}**" in md
    assert rf"\textbf{{{best_psnr:.2f}}}" in to_latex(table)
    assert "n/a" in md and "FID n/a: unavailable" in md
    assert "upsampled 2x" in md


def test_ties_are_all_bold_and_n_differences_are_footnoted(tmp_path: Path) -> None:
    vals = _values(1)
    vals[("inpaint", "dps", "lpips")] = vals[("inpaint", "ddrm", "lpips")] = 0.01
    table = build_table(read_aggregates(synthetic_aggregates(tmp_path, vals, n={"dps": 3})), "photos", ["deblur", "inpaint"], METHODS)
    bold = table.values[(table.values.task == "inpaint") & (table.values.metric == "lpips") & table.values.best]
    assert sorted(bold.method) == ["ddrm", "dps"]
    assert any("DPS 3" in note for note in table.footnotes)


def test_missing_methods_are_named_and_new_methods_appear(tmp_path: Path) -> None:
    paths = [p for p in synthetic_aggregates(tmp_path, _values()) if p.parent.name not in ("dps",)]
    table = build_table(read_aggregates(paths), "photos", ["deblur", "inpaint"], METHODS + ["newmethod"])
    assert "dps" not in table.methods and table.missing_methods == ["dps", "newmethod"]
    assert "Configured but not yet scored" in to_markdown(table)


def test_latex_is_booktabs_and_balanced(tmp_path: Path) -> None:
    tex = to_latex(build_table(read_aggregates(synthetic_aggregates(tmp_path, _values())), "photos", ["deblur", "inpaint"], METHODS))
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-8}", r"\multicolumn{7}{c}{Gaussian deblurring}"):
        assert token in tex
    body = tex.split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]
    for line in body.splitlines():
        if line.endswith(r"\\") and "multicolumn" not in line:
            assert line.count("&") == 2 * (len(columns()) + 1), line
    assert tex.count("{") == tex.count("}")


def test_bad_aggregate_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_aggregates([tmp_path / "nope.csv"])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the columns"):
        read_aggregates([bad])


def test_table_numbers_equal_per_image_means(tmp_path: Path) -> None:
    """metrics CLI -> tables CLI: every table number is the mean of the per-image CSV."""
    from test_metrics_eval import make_task, run_metrics, write_recon

    aggs = []
    for task in ("deblur", "inpaint"):
        tdir = make_task(tmp_path / "results", task=task, n=5)
        x, names = np.load(tdir / "measurements" / "test.npz")["x"], [f"img{i:03d}" for i in range(5)]
        for k, method in enumerate(("dirac-po", "pnp-admm")):
            aggs.append(run_metrics(tdir, method, write_recon(tdir / method / "recon" / "test.npz", x, names, 0.02 + 0.03 * k, seed=k)) / "aggregate.csv")
        aggs.append(run_metrics(tdir, "y", None) / "aggregate.csv")
    stem = tmp_path / "tables" / "photos"
    tables_main(["--settings", json.dumps({"dataset": "photos", "tasks": ["deblur", "inpaint"], "methods": METHODS, "seed": 0}),
                 "--aggregates", *map(str, aggs), "--out-stem", str(stem)])
    for ext in ("md", "tex", "csv", "html"):
        assert stem.with_suffix(f".{ext}").stat().st_size > 0
    table = pd.read_csv(stem.with_suffix(".csv"))
    for task in ("deblur", "inpaint"):
        for method in ("dirac-po", "pnp-admm", "y"):
            per_image = pd.read_csv(tmp_path / "results" / "photos" / task / method / "metrics" / "per_image.csv")
            for metric in ("psnr", "ssim", "lpips", "dc_ratio"):
                row = table[(table.task == task) & (table.method == method) & (table.metric == metric)].iloc[0]
                assert row["mean"] == pytest.approx(per_image[metric].mean(), rel=1e-6)
                assert row["n"] == len(per_image)
                assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    md = stem.with_suffix(".md").read_text()
    best = table[(table.task == "deblur") & (table.metric == "psnr") & table.best]
    assert list(best.method) == ["dirac-po"]  # less noise than pnp-admm
    assert f"**{best['mean'].iloc[0]:.2f}**" in md


def test_one_markdown_table_helper_aligns_escapes_and_checks_widths():
    from diracbench.textables import markdown_table

    assert markdown_table(["a", "b", "c"], [["x|y", 1, 2.5]], "lrc") == ["| a | b | c |", "|---|---:|:---:|", "| x|y | 1 | 2.5 |"]
    assert markdown_table(["a"], [["x|y\nz"]], escape=True)[-1] == "| x\\|y z |"
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])
