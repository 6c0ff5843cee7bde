"""`python -m diracbench.metrics`: per-image CSV, bootstrap aggregates, clear errors on bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diracbench.errors import UserError
from diracbench.metrics.__main__ import main as metrics_main
from diracbench.metrics.evaluate import bootstrap_ci

METRIC_SETTINGS = {"seed": 0, "lpips_net": "vgg", "lpips_upsample_below": 64, "fid": True, "bootstrap_resamples": 300, "ci_level": 0.95, "batch_size": 8}


def make_task(root: Path, task: str = "deblur", n: int = 6, size: int = 16, seed: int = 0) -> Path:
    """operator.json + measurements/test.npz made with the real operators, from smooth random images."""
    import torch

    from diracbench.operators import GeometricNoise, family_from_config, operator_spec

    rng = np.random.default_rng(seed)
    low = rng.random((n, 3, size // 4, size // 4))
    x = np.clip(np.kron(low, np.ones((1, 1, 4, 4))) + 0.03 * rng.standard_normal((n, 3, size, size)), 0, 1).astype(np.float32)
    cfg = {"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 1.5} if task == "deblur" else {"kind": "inpaint", "mask_std_min": 0.1, "mask_std_max": 3.0, "mask_power": 4}
    family = family_from_config(cfg, size)
    noise = GeometricNoise(0.01, 0.05)
    y = family.measurement_operator().forward(torch.from_numpy(x)).numpy() + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    tdir = root / "photos" / task
    (tdir / "measurements").mkdir(parents=True, exist_ok=True)
    (tdir / "operator.json").write_text(json.dumps(operator_spec(family, noise, task)))
    names = np.array([f"img{i:03d}" for i in range(n)])
    np.savez(tdir / "measurements" / "test.npz", x=x, y=y.astype(np.float32), names=names, seeds=np.arange(n))
    return tdir


def write_recon(path: Path, x: np.ndarray, names, noise: float, seed: int = 1, nfe: int = 10) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    x_hat = np.clip(x + noise * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    np.savez(path, x_hat=x_hat, names=np.asarray(names), nfe=np.full(len(x), nfe), seconds=np.full(len(x), 0.25))
    return path


def run_metrics(tdir: Path, method: str, recon: Path | None) -> Path:
    out = tdir / method / "metrics"
    settings = {"dataset": "photos", "task": tdir.name, "method": method, **METRIC_SETTINGS}
    argv = ["--settings", json.dumps(settings), "--task-dir", str(tdir), "--out-dir", str(out)]
    if recon is not None:
        argv += ["--recon", str(recon)]
    metrics_main(argv)
    return out


def test_bootstrap_ci_contains_the_mean() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        values = rng.lognormal(0, 2, n)  # heavily skewed
        lo, hi = bootstrap_ci(values, 200, 0.95, np.random.default_rng(trial))
        assert lo <= values.mean() <= hi
    lo, hi = bootstrap_ci(np.array([1.0, np.nan, 3.0]), 500, 0.95, np.random.default_rng(0))
    assert 1.0 <= lo <= 2.0 <= hi <= 3.0
    wide = bootstrap_ci(np.random.default_rng(1).normal(0, 1, 20), 2000, 0.95, np.random.default_rng(2))
    narrow = bootstrap_ci(np.random.default_rng(1).normal(0, 1, 20), 2000, 0.5, np.random.default_rng(2))
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert all(np.isnan(bootstrap_ci(np.array([np.nan]), 100, 0.95, np.random.default_rng(0))))


def test_metrics_cli_writes_per_image_and_aggregate(tmp_path: Path) -> None:
    tdir = make_task(tmp_path)
    meas = np.load(tdir / "measurements" / "test.npz")
    # A subset in a different order: matched by name, not position.
    order = [4, 1, 2]
    recon = write_recon(tmp_path / "r.npz", meas["x"][order], meas["names"][order], 0.03)
    out = run_metrics(tdir, "dps", recon)
    per_image = pd.read_csv(out / "per_image.csv")
    agg = pd.read_csv(out / "aggregate.csv").set_index("metric")
    assert list(per_image["name"]) == [f"img{i:03d}" for i in order]
    assert list(per_image["image"]) == order
    assert set(["psnr", "ssim", "lpips", "dc", "dc_ratio", "nfe", "seconds"]) <= set(per_image.columns)
    for metric in ("psnr", "ssim", "lpips", "dc", "nfe", "seconds"):
        assert agg.loc[metric, "mean"] == pytest.approx(per_image[metric].mean(), rel=1e-6)
        assert agg.loc[metric, "n"] == 3
        assert agg.loc[metric, "ci_low"] <= agg.loc[metric, "mean"] <= agg.loc[metric, "ci_high"]
    assert agg.loc["fd_vgg", "mean"] > 0 and "not FID" in agg.loc["fd_vgg", "note"]
    assert np.isnan(agg.loc["fid", "mean"]) == ("unavailable" in agg.loc["fid", "note"])
    assert "upsampled 4x" in agg.loc["lpips", "note"]
    assert (out / "per_image.provenance.json").is_file()


def test_reference_row_scores_the_measurement(tmp_path: Path) -> None:
    tdir = make_task(tmp_path)
    ref = pd.read_csv(run_metrics(tdir, "y", None) / "per_image.csv")
    good = pd.read_csv(run_metrics(tdir, "dirac-po", write_recon(tmp_path / "r.npz", np.load(tdir / "measurements" / "test.npz")["x"], [f"img{i:03d}" for i in range(6)], 0.01)) / "per_image.csv")
    assert len(ref) == 6 and ref["nfe"].isna().all()
    assert good["psnr"].mean() > ref["psnr"].mean() + 5
    assert good["lpips"].mean() < ref["lpips"].mean()


@pytest.mark.parametrize(
    "corrupt,message",
    [
        ("missing", "does not exist"),
        ("truncated", "not a readable .npz"),
        ("no_nfe", "lacks the arrays"),
        ("shape", "x_hat has shape"),
        ("nan", "NaN/inf"),
        ("names", "not in the test measurements"),
        ("repeat", "names repeat"),
    ],
)
def test_bad_recon_files_give_clear_errors(tmp_path: Path, corrupt: str, message: str) -> None:
    tdir = make_task(tmp_path, n=4)
    meas = np.load(tdir / "measurements" / "test.npz")
    path = tmp_path / "recon" / "test.npz"
    path.parent.mkdir()
    x, names = meas["x"].copy(), list(meas["names"])
    arrays = {"x_hat": x, "names": np.array(names), "nfe": np.ones(4), "seconds": np.ones(4)}
    if corrupt == "truncated":
        np.savez(path, **arrays)
        path.write_bytes(path.read_bytes()[:200])
    elif corrupt == "no_nfe":
        np.savez(path, **{k: v for k, v in arrays.items() if k != "nfe"})
    elif corrupt == "shape":
        np.savez(path, **{**arrays, "x_hat": x[:, :, :8, :8]})
    elif corrupt == "nan":
        x[1, 0, 0, 0] = np.nan
        np.savez(path, **arrays)
    elif corrupt == "names":
        np.savez(path, **{**arrays, "names": np.array(["a", "b", "c", "d"])})
    elif corrupt == "repeat":
        np.savez(path, **{**arrays, "names": np.array([names[0]] * 4)})
    with pytest.raises(UserError, match=message) as err:
        run_metrics(tdir, "ddrm", path)
    assert str(path) in str(err.value)
    assert not (tdir / "ddrm" / "metrics" / "per_image.csv").exists()


def test_settings_must_be_complete(tmp_path: Path) -> None:
    tdir = make_task(tmp_path, n=2)
    with pytest.raises(UserError, match="lacks"):
        metrics_main(["--settings", json.dumps({"dataset": "photos"}), "--task-dir", str(tdir), "--out-dir", str(tmp_path / "o")])
