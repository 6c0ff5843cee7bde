"""The paper's claims, as checks that print: `python -m diracbench.claims`.

For each task of a dataset, one row per claim with true/false (or n/a when a method it needs is
not configured) and the numbers behind it:

1. `do_psnr_ge_po`     Dirac-DO's mean test PSNR is at least Dirac-PO's.
2. `po_lpips_le_do`    Dirac-PO's mean test LPIPS is at most Dirac-DO's.
3. `lpips_improves`    LPIPS of x0_hat improves over some stretch of the reverse path: on the val
                       path of tune_dirac (PO's run, t = 1 to 0), some later scored step beats the
                       one-shot estimate at t = 1; the test path of sample_dirac is reported beside.
4. `dc_within_dirac_not_dps`  Dirac's data-consistency error mean((y - A_1(x0_hat))^2) stays within
                       1.2 σ₁² at every step of its path (val path, and PO's test path), while DPS's
                       exceeds it somewhere on its test path (paper Fig. 4 left).
5. `po_tenth_nfe_of_dps`  Dirac-PO uses at most 1/10 of DPS's NFEs at no worse LPIPS, compared on
                       the test images both scored (DPS may score only the first few).

`beyond_spread` stays empty here: the `seeds` target (diracbench.seeds) fills it in its copy of
this table, where a comparison of two means counts only when their gap exceeds the sum of the two
spreads over training seeds (`apply_spread`). Nothing here is tuned: every number is read from
the metrics, tuning and sampling outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from diracbench import cli
from diracbench.contracts import PER_IMAGE_COLUMNS, check_aggregate, check_csv_complete
from diracbench.errors import UserError
from diracbench.textables import to_html, to_markdown

DC_BOUND = 1.2  # in units of the noise floor sigma_1^2
NFE_RATIO = 10
CLAIMS = {
    "do_psnr_ge_po": "DO ≥ PO in PSNR",
    "po_lpips_le_do": "PO ≤ DO in LPIPS",
    "lpips_improves": "LPIPS improves along the reverse path",
    "dc_within_dirac_not_dps": f"data consistency ≤ {DC_BOUND:g} σ₁² along the path for Dirac, not for DPS",
    "po_tenth_nfe_of_dps": f"Dirac-PO ≤ 1/{NFE_RATIO} of DPS's NFEs at ≤ its LPIPS",
}
TRAJ_COLUMNS = ("image", "step", "t", "nfe", "dc", "lpips")
COLUMNS = ("dataset", "task", "claim", "statement", "holds", "numbers", "beyond_spread")


def read_aggregate(path: Path) -> dict[str, float]:
    check_csv_complete(path, "the 'metrics' rule")
    df = pd.read_csv(path)
    check_aggregate(path, df["metric"])
    return {str(m): float(v) for m, v in zip(df["metric"], df["mean"])}


def read_per_image(path: Path) -> pd.DataFrame:
    check_csv_complete(path, "the 'metrics' rule")
    df = pd.read_csv(path)
    missing = [c for c in PER_IMAGE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the columns {missing}; delete it and rerun the 'metrics' rule")
    return df


def read_trajectory(path: Path, rule: str) -> pd.DataFrame:
    check_csv_complete(path, rule)
    df = pd.read_csv(path)
    missing = [c for c in TRAJ_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the columns {missing}; delete it and rerun {rule}")
    return df


def step_means(traj: pd.DataFrame) -> pd.DataFrame:
    return traj.groupby("step", as_index=False)[["t", "nfe", "dc", "lpips"]].mean().sort_values("step")


def _row(claim: str, holds, numbers: str) -> dict:
    value = "n/a" if holds is None else ("true" if holds else "false")
    return {"claim": claim, "statement": CLAIMS[claim], "holds": value, "numbers": numbers, "beyond_spread": ""}


def lpips_improvement(traj: pd.DataFrame) -> tuple[bool | None, str]:
    m = step_means(traj).dropna(subset=["lpips"])
    if len(m) < 2:
        return None, f"{len(m)} scored step(s)"
    first = m.iloc[0]
    best = m.iloc[int(np.argmin(m["lpips"].to_numpy()[1:])) + 1]
    return bool(best["lpips"] < first["lpips"]), f"{first['lpips']:.4f} at t = {first['t']:.3g} → best later {best['lpips']:.4f} at t = {best['t']:.3g}"


def max_dc_ratio(traj: pd.DataFrame, sigma2: float) -> tuple[float, float]:
    """(max over steps of the mean dc / sigma_1^2, the t where it occurs)."""
    m = step_means(traj).dropna(subset=["dc"])
    if m.empty:
        return float("nan"), float("nan")
    i = int(np.argmax(m["dc"].to_numpy()))
    return float(m["dc"].iloc[i] / sigma2), float(m["t"].iloc[i])


def task_claims(task: str, inputs: dict[str, Path], sigma_1: float) -> list[dict]:
    """`inputs`: aggregate__<method>, per_image__<method>, val_trajectory, test_trajectory__dirac_po,
    test_trajectory__dps (those that exist for this task's configured methods)."""
    rows = []
    agg = {k.split("__", 1)[1]: read_aggregate(p) for k, p in inputs.items() if k.startswith("aggregate__")}
    po, do = agg.get("dirac-po"), agg.get("dirac-do")
    if po and do:
        rows.append(_row("do_psnr_ge_po", do["psnr"] >= po["psnr"], f"DO {do['psnr']:.2f} dB, PO {po['psnr']:.2f} dB (test means)"))
        rows.append(_row("po_lpips_le_do", po["lpips"] <= do["lpips"], f"PO {po['lpips']:.4f}, DO {do['lpips']:.4f} (test means)"))
    else:
        rows += [_row("do_psnr_ge_po", None, "needs dirac-po and dirac-do"), _row("po_lpips_le_do", None, "needs dirac-po and dirac-do")]
    val = read_trajectory(inputs["val_trajectory"], "tune_dirac") if "val_trajectory" in inputs else None
    if val is not None and "variant" in val.columns:
        val = val[val["variant"] == ("po" if "po" in set(val["variant"]) else val["variant"].iloc[0])]
    test_po = read_trajectory(inputs["test_trajectory__dirac_po"], "sample_dirac") if "test_trajectory__dirac_po" in inputs else None
    if val is not None:
        holds, text = lpips_improvement(val)
        extra = ""
        if test_po is not None:
            _, t_text = lpips_improvement(test_po)
            extra = f"; test path of PO (to its t_stop): {t_text}"
        rows.append(_row("lpips_improves", holds, f"val path of PO's run: {text}{extra}"))
    else:
        rows.append(_row("lpips_improves", None, "needs Dirac's tuning trajectory"))
    sigma2 = sigma_1**2
    dps_traj = read_trajectory(inputs["test_trajectory__dps"], "sample_dps") if "test_trajectory__dps" in inputs else None
    if val is not None and dps_traj is not None:
        d_val, t_val = max_dc_ratio(val, sigma2)
        parts = [f"Dirac max {d_val:.2f} σ₁² (val path, at t = {t_val:.3g})"]
        d_max = d_val
        if test_po is not None:
            d_test, t_test = max_dc_ratio(test_po, sigma2)
            parts.append(f"{d_test:.2f} σ₁² (PO test path, at t = {t_test:.3g})")
            d_max = max(d_val, d_test)
        d_dps, t_dps = max_dc_ratio(dps_traj, sigma2)
        parts.append(f"DPS max {d_dps:.3g} σ₁² (test path, at t = {t_dps:.3g}); σ₁² = {sigma2:g}")
        rows.append(_row("dc_within_dirac_not_dps", bool(d_max <= DC_BOUND and d_dps > DC_BOUND), "; ".join(parts)))
    else:
        rows.append(_row("dc_within_dirac_not_dps", None, "needs Dirac's tuning trajectory and DPS's test trajectory"))
    if "per_image__dirac-po" in inputs and "per_image__dps" in inputs:
        a, b = read_per_image(inputs["per_image__dirac-po"]), read_per_image(inputs["per_image__dps"])
        common = sorted(set(a["name"].astype(str)) & set(b["name"].astype(str)))
        if not common:
            rows.append(_row("po_tenth_nfe_of_dps", None, "no test image scored by both"))
        else:
            a = a[a["name"].astype(str).isin(common)]
            b = b[b["name"].astype(str).isin(common)]
            nfe_a, nfe_b, lp_a, lp_b = a["nfe"].mean(), b["nfe"].mean(), a["lpips"].mean(), b["lpips"].mean()
            holds = bool(nfe_a * NFE_RATIO <= nfe_b and lp_a <= lp_b)
            rows.append(_row("po_tenth_nfe_of_dps", holds, f"PO {nfe_a:.0f} NFE, LPIPS {lp_a:.4f}; DPS {nfe_b:.0f} NFE, LPIPS {lp_b:.4f} (the {len(common)} test images both scored; NFE ratio {nfe_b / max(nfe_a, 1e-12):.0f}×)"))
    else:
        rows.append(_row("po_tenth_nfe_of_dps", None, "needs dirac-po and dps"))
    return rows


# The claims that compare two methods' means: (claim, metric, first, second, sign): the claim is
# sign * (first - second) >= 0.
SPREAD_COMPARISONS = {"do_psnr_ge_po": ("psnr", "dirac-do", "dirac-po", 1.0), "po_lpips_le_do": ("lpips", "dirac-po", "dirac-do", -1.0)}


def apply_spread(rows: list[dict], task: str, aggregates: dict[str, dict], spread: pd.DataFrame | None) -> None:
    """Fill `beyond_spread` (the seeds stage): a comparison holds beyond the spread when the gap of
    the two (seed-mean) `aggregates` points the claimed way and exceeds the sum of their spreads
    over training seeds."""
    if spread is None:
        return
    for row in rows:
        comp = SPREAD_COMPARISONS.get(row["claim"])
        if comp is None or row["holds"] == "n/a":
            continue
        metric, first, second, sign = comp
        sel = spread[(spread["task"] == task) & (spread["metric"] == metric)]
        s = {str(m): float(v) for m, v in zip(sel["method"], sel["spread"])}
        if first not in s or second not in s or first not in aggregates or second not in aggregates:
            continue
        gap = sign * (aggregates[first][metric] - aggregates[second][metric])
        row["beyond_spread"] = "true" if gap > s[first] + s[second] else "false"


def claims_table(dataset: str, tasks: Sequence[str], inputs: dict[str, Path], sigma_1: float) -> pd.DataFrame:
    rows = []
    for task in tasks:
        mine = {k.split("__", 1)[1]: v for k, v in inputs.items() if k.startswith(f"{task}__")}
        rows += [{"dataset": dataset, "task": task, **r} for r in task_claims(task, mine, sigma_1)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.claims", __doc__.splitlines()[0])
    parser.add_argument("--input", action="append", default=[], metavar="TASK__KIND[__METHOD]=PATH")
    parser.add_argument("--out-stem", required=True, type=Path, help="results/tables/<dataset>_claims")
    args = parser.parse_args(argv)
    s = args.settings
    for key in ("dataset", "tasks", "sigma_1"):
        if key not in s:
            raise UserError(f"claims settings lack {key!r}")
    inputs = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--input {item!r} must be NAME=PATH")
        inputs[name] = Path(path)
    table = claims_table(s["dataset"], s["tasks"], inputs, float(s["sigma_1"]))
    title = f"Claims of the paper on {s['dataset']} (test split unless stated; nothing tuned on test)"
    header = ["Task", "Claim", "Holds", "Numbers", "Beyond seed spread"]
    cells = [[r.task, r.statement, r.holds, r.numbers, r.beyond_spread] for r in table.itertuples()]
    notes = [f"Beyond seed spread: filled by `snakemake --cores all seeds` in results/seeds/tables/{s['dataset']}_claims_seeds.md, which reruns the learned methods with other training seeds."]
    from diracbench.io import OutputSet

    stem = args.out_stem
    with OutputSet() as out:
        out.write_text(stem.with_name(stem.name + ".md"), to_markdown(title, header, cells, notes))
        out.write_text(stem.with_name(stem.name + ".html"), to_html(title, header, cells, notes))
        table.to_csv(out.path(stem.with_name(stem.name + ".csv")), index=False)
    print(table.to_string(index=False), flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.claims")
