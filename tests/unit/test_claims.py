"""The claims table: each claim true or false from the numbers behind it, and the seeds hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diracbench import claims
from diracbench.contracts import AGGREGATE_METRICS
from diracbench.errors import UserError

SIGMA = 0.05


def _aggregate(path: Path, **means) -> Path:
    rows = [{"dataset": "d", "task": "deblur", "method": "m", "metric": k, "n": 4, "mean": means.get(k, 1.0), "ci_low": 0, "ci_high": 0, "ci_level": 0.95, "note": ""} for k in AGGREGATE_METRICS]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _per_image(path: Path, names, nfe, lpips) -> Path:
    pd.DataFrame({"name": names, "psnr": 20.0, "ssim": 0.5, "lpips": lpips, "dc": 0.0025, "dc_ratio": 1.0, "nfe": nfe, "seconds": 0.1}).to_csv(path, index=False)
    return path


def _trajectory(path: Path, ts, dc, lpips, variant=None) -> Path:
    rows = []
    for img in range(2):
        for step, (t, d, lp) in enumerate(zip(ts, dc, lpips)):
            rows.append({"image": img, "name": f"i{img}", "step": step, "t": t, "nfe": step + 1, "dc": d, "psnr": 20.0, "lpips": lp, **({"variant": variant} if variant else {})})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture()
def files(tmp_path):
    s2 = SIGMA**2
    f = {
        "aggregate__dirac-po": _aggregate(tmp_path / "po.csv", psnr=23.0, lpips=0.40),
        "aggregate__dirac-do": _aggregate(tmp_path / "do.csv", psnr=24.0, lpips=0.45),
        "aggregate__dps": _aggregate(tmp_path / "dps.csv", psnr=20.0, lpips=0.50),
        "per_image__dirac-po": _per_image(tmp_path / "po_pi.csv", ["a", "b", "c", "d"], 26, [0.40, 0.42, 0.9, 0.9]),
        "per_image__dps": _per_image(tmp_path / "dps_pi.csv", ["a", "b"], 1000, [0.45, 0.45]),
        "val_trajectory": _trajectory(tmp_path / "val.csv", [1.0, 0.5, 0.0], [s2, 1.1 * s2, 1.0 * s2], [0.50, 0.45, 0.47], variant="po"),
        "test_trajectory__dirac_po": _trajectory(tmp_path / "test_po.csv", [1.0, 0.5], [s2, s2], [0.5, np.nan]),
        "test_trajectory__dps": _trajectory(tmp_path / "dps_traj.csv", [0.99, 0.5, 0.01], [80 * s2, 3 * s2, s2], [np.nan, np.nan, 0.5]),
    }
    return f


def _by_claim(rows):
    return {r["claim"]: r for r in rows}


def test_every_claim_with_its_numbers(files):
    rows = _by_claim(claims.task_claims("deblur", files, SIGMA))
    assert set(rows) == set(claims.CLAIMS)
    assert rows["do_psnr_ge_po"]["holds"] == "true" and "DO 24.00 dB, PO 23.00 dB" in rows["do_psnr_ge_po"]["numbers"]
    assert rows["po_lpips_le_do"]["holds"] == "true"
    assert rows["lpips_improves"]["holds"] == "true" and "0.5000 at t = 1 → best later 0.4500 at t = 0.5" in rows["lpips_improves"]["numbers"]
    assert rows["dc_within_dirac_not_dps"]["holds"] == "true" and "Dirac max 1.10 σ₁²" in rows["dc_within_dirac_not_dps"]["numbers"] and "DPS max 80 σ₁²" in rows["dc_within_dirac_not_dps"]["numbers"]
    # NFE/LPIPS on the images both scored (a, b): PO 0.41 <= DPS 0.45 at 26 vs 1000 NFE.
    r = rows["po_tenth_nfe_of_dps"]
    assert r["holds"] == "true" and "LPIPS 0.4100" in r["numbers"] and "the 2 test images" in r["numbers"]
    assert all(r["beyond_spread"] == "" for r in rows.values())


def test_claims_turn_false_with_the_numbers(files, tmp_path):
    s2 = SIGMA**2
    files = dict(files)
    files["aggregate__dirac-do"] = _aggregate(tmp_path / "do2.csv", psnr=22.0, lpips=0.30)
    files["val_trajectory"] = _trajectory(tmp_path / "val2.csv", [1.0, 0.5, 0.0], [s2, 1.3 * s2, s2], [0.40, 0.45, 0.47], variant="po")
    files["per_image__dps"] = _per_image(tmp_path / "dps2.csv", ["a", "b"], 200, [0.45, 0.45])
    rows = _by_claim(claims.task_claims("deblur", files, SIGMA))
    assert rows["do_psnr_ge_po"]["holds"] == "false" and rows["po_lpips_le_do"]["holds"] == "false"
    assert rows["lpips_improves"]["holds"] == "false"
    assert rows["dc_within_dirac_not_dps"]["holds"] == "false"  # Dirac reaches 1.3 sigma_1^2
    assert rows["po_tenth_nfe_of_dps"]["holds"] == "false"  # 26 > 200 / 10
    # A DPS that stays consistent also makes the DC claim false.
    files["val_trajectory"] = _trajectory(tmp_path / "val3.csv", [1.0, 0.0], [s2, s2], [0.5, 0.4], variant="po")
    files["test_trajectory__dps"] = _trajectory(tmp_path / "dps3.csv", [0.9, 0.1], [1.1 * s2, s2], [np.nan, np.nan])
    assert _by_claim(claims.task_claims("deblur", files, SIGMA))["dc_within_dirac_not_dps"]["holds"] == "false"


def test_missing_methods_are_na_and_bad_files_one_line_errors(files, tmp_path):
    only = {k: v for k, v in files.items() if "dps" not in k}
    rows = _by_claim(claims.task_claims("deblur", only, SIGMA))
    assert rows["po_tenth_nfe_of_dps"]["holds"] == "n/a" and rows["dc_within_dirac_not_dps"]["holds"] == "n/a"
    cut = tmp_path / "cut.csv"
    cut.write_text(Path(files["aggregate__dps"]).read_text()[:-20])
    with pytest.raises(UserError, match="incomplete"):
        claims.task_claims("deblur", {**files, "aggregate__dps": cut}, SIGMA)


def test_the_seeds_hook_fills_beyond_spread(files, tmp_path):
    rows = claims.task_claims("deblur", files, SIGMA)
    aggs = {m: claims.read_aggregate(files[f"aggregate__{m}"]) for m in ("dirac-po", "dirac-do")}
    spread = pd.DataFrame([
        {"dataset": "d", "task": "deblur", "method": "dirac-po", "metric": "psnr", "spread": 0.3},
        {"dataset": "d", "task": "deblur", "method": "dirac-do", "metric": "psnr", "spread": 0.3},
        {"dataset": "d", "task": "deblur", "method": "dirac-po", "metric": "lpips", "spread": 0.03},
        {"dataset": "d", "task": "deblur", "method": "dirac-do", "metric": "lpips", "spread": 0.03},
    ])
    claims.apply_spread(rows, "deblur", aggs, spread)
    got = _by_claim(rows)
    assert got["do_psnr_ge_po"]["beyond_spread"] == "true"  # gap 1.0 dB > 0.6
    assert got["po_lpips_le_do"]["beyond_spread"] == "false"  # gap 0.05 < 0.06
    assert got["lpips_improves"]["beyond_spread"] == ""


def test_cli_writes_md_csv_html(files, tmp_path):
    args = ["--settings", json.dumps({"dataset": "d", "tasks": ["deblur"], "sigma_1": SIGMA}), "--out-stem", str(tmp_path / "out" / "d_claims")]
    for k, v in files.items():
        args += ["--input", f"deblur__{k}={v}"]
    claims.main(args)
    table = pd.read_csv(tmp_path / "out" / "d_claims.csv", keep_default_na=False, dtype=str)
    assert list(table.columns) == list(claims.COLUMNS) and len(table) == 5 and set(table.holds) == {"true"}
    md = (tmp_path / "out" / "d_claims.md").read_text()
    assert md.count("| deblur |") == 5 and (tmp_path / "out" / "d_claims.html").read_text().startswith("<!DOCTYPE html>")
