"""Greedy degradation scheduler (paper Algorithm 2), its distances, the official blur table, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diracbench.errors import UserError
from diracbench.operators import GeometricNoise, family_from_config, operator_spec, read_schedule_table
from diracbench.schedule import __main__ as schedule_cli
from diracbench.schedule.distances import FeatureDistance, pixel_embedding
from diracbench.schedule.greedy import greedy_schedule
from diracbench.schedule.official import OFFICIAL_INDICES, official_blur_table, official_blur_table_text

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_FILE = REPO / "workflow" / "resources" / "blur_schedule_official.txt"


def _abs_distance(values: np.ndarray):
    return lambda i, js: np.abs(values[np.asarray(js)] - values[i])


@pytest.mark.parametrize("f", [np.square, np.log, np.sqrt], ids=["square", "log", "sqrt"])
@pytest.mark.parametrize("grid_size", [500, 2000])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_greedy_power_of_two_budget_is_equally_spaced_in_f(f, grid_size, k):
    grid = np.linspace(0.3, 3.0, grid_size)
    fv = f(grid)
    budget = 2**k - 1
    result = greedy_schedule(grid_size, budget, _abs_distance(fv))
    assert len(result.indices) == budget + 2
    assert result.indices[0] == 0 and result.indices[-1] == grid_size - 1
    target = np.linspace(fv[0], fv[-1], budget + 2)
    err = np.abs(fv[result.indices] - target).max()
    one_step = np.abs(np.diff(fv)).max()
    # Each bisection level rounds its midpoint to the grid (at most half a step), and a midpoint
    # inherits its end points' errors, so level k is off by at most k/2 steps; on a grid that is
    # fine relative to the budget (here 2000 candidates, as the official grid) that is one step.
    assert err <= (one_step if grid_size >= 2000 else max(1, k / 2) * one_step)


@pytest.mark.parametrize("budget", [0, 1, 5, 10, 37, 100])
def test_greedy_max_distance_never_increases(budget):
    fv = np.cumsum(np.random.default_rng(budget).uniform(0.1, 2.0, 400))  # any monotone f
    result = greedy_schedule(len(fv), budget, _abs_distance(fv))
    assert len(result.max_distance) == budget + 1
    assert np.all(np.diff(result.max_distance) <= 0)
    assert np.all(np.diff(result.indices) > 0)
    # The recorded maximum is the largest gap between consecutive chosen points.
    assert result.max_distance[-1] == pytest.approx(np.diff(fv[result.indices]).max())


def test_greedy_splits_the_widest_interval_first():
    fv = np.concatenate([np.linspace(0, 10, 101), np.linspace(10.1, 11, 10)])  # steep start, flat end
    result = greedy_schedule(len(fv), 3, _abs_distance(fv))
    assert all(fv[j] < 10.0 for j in result.indices[1:-1])


def test_greedy_rejects_a_budget_larger_than_the_grid():
    with pytest.raises(UserError, match="budget"):
        greedy_schedule(10, 9, _abs_distance(np.arange(10.0)))


def test_official_table_file_regenerates_from_the_grid_indices():
    assert OFFICIAL_FILE.read_text() == official_blur_table_text()
    table = read_schedule_table(OFFICIAL_FILE)
    t, std = official_blur_table()
    assert len(OFFICIAL_INDICES) == 102 and len(table.t) == 102
    np.testing.assert_allclose(table.t, np.arange(102) / 101, atol=1e-11)
    np.testing.assert_allclose(table.values, 0.3 + 2.7 * np.asarray(OFFICIAL_INDICES) / 1999, atol=1e-11)
    # Sample values of the official s(t) (dirac-method.md §2).
    got = table(torch.tensor([0.1, 0.25, 0.5, 0.7, 0.9])).numpy()
    np.testing.assert_allclose(got, [0.487, 0.670, 1.101, 1.578, 2.400], atol=6e-4)


def _degrade_mse_setup(n_images=3, size=12, grid_size=20):
    torch.manual_seed(0)
    x = torch.rand(n_images, 3, size, size)
    fam = family_from_config({"kind": "blur", "kernel_size": 7, "std_min": 0.3, "std_max": 2.0}, size)
    t_of = torch.linspace(0, 1, grid_size, dtype=torch.float64)

    def degrade(idx):
        t = t_of[torch.as_tensor(idx)].repeat_interleave(n_images)
        return fam.apply(x.repeat(len(idx), 1, 1, 1), t).reshape(len(idx), n_images, 3, size, size)

    return x, fam, t_of, degrade


@pytest.mark.parametrize("root", [False, True])
def test_feature_distance_is_the_mean_per_image_mse_and_dense_equals_lazy(root):
    x, fam, t_of, degrade = _degrade_mse_setup()
    lazy = FeatureDistance(degrade, pixel_embedding, 3, root=root, batch_images=4, cache_bytes=3 * 3 * 144 * 4 * 5)
    js = np.arange(20)
    got = lazy(4, js)
    a = fam.apply(x, float(t_of[4]))
    for j in (0, 7, 19):
        mse = (a - fam.apply(x, float(t_of[j]))).pow(2).flatten(1).mean(1).double()
        want = (mse.sqrt() if root else mse).mean().item()
        assert got[j] == pytest.approx(want, rel=1e-5, abs=1e-12)
    dense = FeatureDistance(degrade, pixel_embedding, 3, root=root)
    assert dense.precompute(20)
    np.testing.assert_allclose(dense(4, js), got, rtol=1e-4, atol=1e-9)
    assert got[4] == 0 and np.all(np.diff(got[4:]) > 0) and np.all(np.diff(got[:5]) < 0)


def test_lpips_embedding_reproduces_lpips():
    pytest.importorskip("lpips")
    from diracbench.metrics.perceptual import LPIPSMetric
    from diracbench.schedule.distances import LPIPSEmbedding

    try:
        embed = LPIPSEmbedding("vgg", 64)
    except UserError as err:  # no backbone weights on this machine
        pytest.skip(f"LPIPS backbone weights unavailable: {err}")
    torch.manual_seed(1)
    a, b = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    b[:2] = (a[:2] + 0.05 * torch.randn(2, 3, 32, 32)).clamp(0, 1)  # near pairs: small distances
    want = LPIPSMetric("vgg", 64)(a, b)
    got = (embed(a) - embed(b)).pow(2).sum(1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def _write_inputs(tmp: Path, operator_cfg: dict, size: int = 16, n: int = 12) -> tuple[Path, Path]:
    fam = family_from_config(operator_cfg, size)
    spec = operator_spec(fam, GeometricNoise(0.01, 0.05), "deblur" if operator_cfg["kind"] == "blur" else "inpaint")
    op = tmp / "operator.json"
    op.write_text(json.dumps(spec))
    rng = np.random.default_rng(0)
    # Smooth random images (upsampled noise) so that blur changes them gradually.
    low = rng.uniform(0, 255, size=(n, 3, size // 4, size // 4))
    imgs = np.repeat(np.repeat(low, 4, axis=2), 4, axis=3).astype(np.uint8)
    train = tmp / "train.npy"
    np.save(train, imgs)
    return op, train


BLUR = {"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 3.0}
MASK = {"kind": "inpaint", "mask_std_min": 0.1, "mask_std_max": 4.0, "mask_power": 4}


@pytest.mark.parametrize("operator_cfg", [BLUR, MASK], ids=["blur", "mask"])
def test_cli_greedy_writes_a_monotone_schedule_and_its_figure(tmp_path, operator_cfg):
    op, train = _write_inputs(tmp_path, operator_cfg)
    settings = {"schedule": {"kind": "greedy", "metric": "rmse", "grid_size": 40, "budget": 7, "n_images": 5}, "seed": 0, "lpips": None}
    out = tmp_path / "schedule"
    schedule_cli.main(["--settings", json.dumps(settings), "--train", str(train), "--operator", str(op), "--out-dir", str(out)])
    table = pd.read_csv(out / "schedule.csv")
    assert list(table.columns) == ["t", "value"] and len(table) == 9
    np.testing.assert_allclose(table["t"], np.arange(9) / 8)
    assert table["value"].iloc[0] == pytest.approx(operator_cfg.get("std_min", 0.1))
    assert table["value"].iloc[-1] == pytest.approx(operator_cfg.get("std_max", 4.0))
    assert np.all(np.diff(table["value"]) > 0)
    iters = pd.read_csv(out / "iterations.csv")
    assert len(iters) == 8 and np.all(np.diff(iters["max_distance"]) <= 1e-12)
    for name in ("schedule.png", "schedule.pdf"):
        assert (out / name).stat().st_size > 1000
    # The schedule plugs into the operator family (end points agree with the measurements').
    from diracbench.dirac import scheduled_family

    scheduled_family(json.loads(op.read_text()), out / "schedule.csv")


def test_cli_from_file_copies_the_official_table_and_linear_writes_two_rows(tmp_path):
    op, train = _write_inputs(tmp_path, BLUR)
    out = tmp_path / "official"
    args = ["--train", str(train), "--operator", str(op)]
    schedule_cli.main(["--settings", json.dumps({"schedule": {"kind": "from_file"}, "seed": 0, "lpips": None}), *args, "--file", str(OFFICIAL_FILE), "--out-dir", str(out)])
    table = pd.read_csv(out / "schedule.csv")
    t, std = official_blur_table()
    np.testing.assert_allclose(table["t"], t, atol=1e-9)
    np.testing.assert_allclose(table["value"], std, atol=1e-9)
    assert len(pd.read_csv(out / "iterations.csv")) == 0
    lin = tmp_path / "linear"
    schedule_cli.main(["--settings", json.dumps({"schedule": {"kind": "linear"}, "seed": 0, "lpips": None}), *args, "--out-dir", str(lin)])
    assert pd.read_csv(lin / "schedule.csv").values.tolist() == [[0.0, 0.3], [1.0, 3.0]]


def test_cli_from_file_rejects_a_table_for_another_operator(tmp_path):
    op, train = _write_inputs(tmp_path, {**BLUR, "std_max": 1.5})
    with pytest.raises(UserError, match="t = 1"):
        schedule_cli.main(["--settings", json.dumps({"schedule": {"kind": "from_file"}, "seed": 0, "lpips": None}), "--train", str(train), "--operator", str(op), "--file", str(OFFICIAL_FILE), "--out-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x" / "schedule.csv").exists()
