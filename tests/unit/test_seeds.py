"""The seeds stage: mean ± spread over training seeds, claims beyond that spread, same measurements."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diracbench import seeds
from diracbench.errors import UserError

from test_claims import SIGMA, _aggregate, _per_image, _trajectory

PSNR_DO = {0: 24.0, 1: 24.2, 2: 23.8}  # DO's PSNR per seed; PO's is 23.0 on every seed


def _measurements(path, y_shift=0.0):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 4, 4)).astype(np.float32)
    np.savez(path, x=x, y=x + np.float32(y_shift), seeds=np.arange(2))
    return path


def _replicate(root, seed, po_lpips=0.40, val_lpips=(0.50, 0.45, 0.47), y_shift=0.0):
    root.mkdir(parents=True, exist_ok=True)
    s2 = SIGMA**2
    files = {
        "aggregate__dirac-po": _aggregate(root / "po.csv", psnr=23.0, lpips=po_lpips),
        "aggregate__dirac-do": _aggregate(root / "do.csv", psnr=PSNR_DO[seed], lpips=0.45),
        "aggregate__dps": _aggregate(root / "dps.csv", psnr=20.0, lpips=0.50),
        "per_image__dirac-po": _per_image(root / "po_pi.csv", ["a", "b"], 1, [po_lpips, po_lpips]),
        "per_image__dps": _per_image(root / "dps_pi.csv", ["a", "b"], 1000, [0.45, 0.45]),
        "val_trajectory": _trajectory(root / "val.csv", [1.0, 0.5, 0.0], [s2, 1.1 * s2, s2], list(val_lpips), variant="po"),
        "test_trajectory__dps": _trajectory(root / "dps_traj.csv", [0.99, 0.01], [80 * s2, s2], [np.nan, 0.5]),
        "measurements__val": _measurements(root / "val.npz", y_shift),
        "measurements__test": _measurements(root / "test.npz"),
    }
    return {f"seed{seed}__deblur__{k}": v for k, v in files.items()}


@pytest.fixture()
def per_seed(tmp_path):
    items = {}
    for seed in (0, 1, 2):
        items.update(_replicate(tmp_path / f"s{seed}", seed, val_lpips=(0.50, 0.45, 0.47) if seed != 2 else (0.40, 0.45, 0.47)))
    return seeds.split_inputs(items)


def test_mean_and_spread_over_seeds(per_seed, tmp_path):
    fixed = {"seed0__deblur__aggregate__admm-tv": _aggregate(tmp_path / "tv.csv", psnr=22.5)}
    per_seed[0].update(seeds.split_inputs(fixed)[0])
    stats = seeds.seed_statistics("d", per_seed, ["deblur"], ["dirac-po", "dirac-do", "dps"], ["admm-tv"])
    do = stats[(stats["method"] == "dirac-do") & (stats["metric"] == "psnr")].iloc[0]
    assert do["n_seeds"] == 3 and do["mean"] == pytest.approx(24.0) and do["spread"] == pytest.approx(np.std([24.0, 24.2, 23.8], ddof=1))
    assert (do["seed_0"], do["seed_1"], do["seed_2"]) == (24.0, 24.2, 23.8)
    tv = stats[(stats["method"] == "admm-tv") & (stats["metric"] == "psnr")].iloc[0]
    assert tv["n_seeds"] == 1 and tv["spread"] == 0.0 and np.isnan(tv["seed_1"])


def test_claims_count_only_beyond_the_spread(per_seed):
    stats = seeds.seed_statistics("d", per_seed, ["deblur"], ["dirac-po", "dirac-do", "dps"], [])
    rows = {r.claim: r for r in seeds.seeds_claims("d", per_seed, ["deblur"], SIGMA, stats).itertuples()}
    # DO - PO = 1.0 dB against a spread of 0.2 + 0: beyond it.
    assert rows["do_psnr_ge_po"].holds == "true" and rows["do_psnr_ge_po"].beyond_spread == "true" and rows["do_psnr_ge_po"].seeds_holding == "3/3"
    # LPIPS improves along the path on seeds 0 and 1 but not on seed 2: true, yet not beyond the spread.
    assert rows["lpips_improves"].holds == "true" and rows["lpips_improves"].seeds_holding == "2/3" and rows["lpips_improves"].beyond_spread == "false"


def test_a_small_gap_is_within_the_spread(tmp_path):
    items = {}
    for seed, lp in ((0, 0.449), (1, 0.40), (2, 0.50)):
        items.update(_replicate(tmp_path / f"s{seed}", seed, po_lpips=lp))
    per_seed = seeds.split_inputs(items)
    stats = seeds.seed_statistics("d", per_seed, ["deblur"], ["dirac-po", "dirac-do", "dps"], [])
    row = {r.claim: r for r in seeds.seeds_claims("d", per_seed, ["deblur"], SIGMA, stats).itertuples()}["po_lpips_le_do"]
    assert row.holds == "true" and row.seeds_holding == "2/3" and row.beyond_spread == "false"


def test_replicates_must_see_the_same_measurements(tmp_path):
    items = {**_replicate(tmp_path / "s0", 0), **_replicate(tmp_path / "s1", 1, y_shift=1e-3)}
    with pytest.raises(UserError, match="training seed 1 did not see the same measurements"):
        seeds.check_same_measurements(seeds.split_inputs(items), 0)
    with pytest.raises(UserError, match="must start with the training seed"):
        seeds.split_inputs({"deblur__aggregate__dps": tmp_path / "x.csv"})


def test_cli_writes_both_tables(per_seed, tmp_path):
    args = [f"--input={f'seed{s}__{k}'}={p}" for s, files in per_seed.items() for k, p in files.items()]
    settings = '{"dataset": "d", "tasks": ["deblur"], "methods": ["dirac-po", "dirac-do", "dps"], "fixed_methods": [], "sigma_1": 0.05, "seeds": [0, 1, 2]}'
    seeds.main(["--settings", settings, *args, "--out-stem", str(tmp_path / "out" / "d")])
    table = pd.read_csv(tmp_path / "out" / "d_table1_seeds.csv")
    assert {"mean", "spread", "seed_0", "seed_2"} <= set(table.columns)
    md = (tmp_path / "out" / "d_table1_seeds.md").read_text()
    assert "24.00 ± 0.20" in md and "3 training seeds (0, 1, 2)" in md
    claims = (tmp_path / "out" / "d_claims_seeds.md").read_text()
    assert "Seeds holding" in claims and "2/3" in claims


def test_beyond_spread_needs_the_seed_means_to_point_the_claimed_way():
    """The main run's verdict is not enough: seed means that reverse the claim by more than the
    spread are 'false', however large the gap."""
    from diracbench.claims import apply_spread

    rows = [{"claim": "do_psnr_ge_po", "holds": "true", "beyond_spread": ""}]
    spread = pd.DataFrame([{"task": "deblur", "method": m, "metric": "psnr", "spread": 0.1} for m in ("dirac-po", "dirac-do")])
    apply_spread(rows, "deblur", {"dirac-do": {"psnr": 22.0}, "dirac-po": {"psnr": 23.0}}, spread)
    assert rows[0]["beyond_spread"] == "false"
    apply_spread(rows, "deblur", {"dirac-do": {"psnr": 23.5}, "dirac-po": {"psnr": 23.0}}, spread)
    assert rows[0]["beyond_spread"] == "true"
