"""Dirac-PO / Dirac-DO through the method contract and the sample / tune CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from diracbench import sample as sample_cli
from diracbench import tune as tune_cli
from diracbench.dirac.sampler import SamplerSettings
from diracbench.errors import UserError
from diracbench.methods import dirac
from diracbench.methods.base import TRAJECTORY_COLUMNS, RunContext, load_problem, load_problem_and_recorder
from diracbench.nn.models import build_model, save_weights
from diracbench.operators import GeometricNoise, family_from_config, operator_spec

TINY_NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
VARIANT = {"model_dt": 1.0, "dt": 0.25, "t_stop": "tune", "estimator": "look_ahead", "delta": None, "guidance": "none", "zeta": 0.0, "guidance_sign": "descent", "output": "x0_hat"}
RUN = {"batch_size": 3, "lpips_every": 0, "lpips": {"net": "vgg", "upsample_below": 64}, "posterior_images": 2, "posterior_samples": 3, "posterior_t_stop": None}


def _lpips_or_skip():
    from diracbench.metrics.perceptual import LPIPSMetric

    try:
        LPIPSMetric("vgg", 64)
    except UserError as err:
        pytest.skip(f"LPIPS backbone weights unavailable: {err}")


@pytest.fixture()
def setup(tmp_path):
    size, n = 16, 5
    fam = family_from_config({"kind": "inpaint", "mask_std_min": 0.1, "mask_std_max": 4.0, "mask_power": 4}, size)
    noise = GeometricNoise(0.01, 0.05)
    (tmp_path / "operator.json").write_text(json.dumps(operator_spec(fam, noise, "inpaint")))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    y = fam.apply(x, 1.0) + 0.05 * torch.randn(x.shape, generator=g)
    names = [f"img{i}" for i in range(n)]
    for split in ("val", "test"):
        np.savez(tmp_path / f"{split}.npz", x=x.numpy(), y=y.numpy(), names=np.array(names), seeds=np.arange(n))
    pd.DataFrame({"t": [0, 0.5, 1], "value": [0.1, 1.5, 4.0]}).to_csv(tmp_path / "schedule.csv", index=False)
    for dt, seed in ((1.0, 0), (0.0, 1)):
        torch.manual_seed(seed)
        model = build_model("dirac", TINY_NET, size)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        save_weights(tmp_path / f"dt{dt:g}.pt", "dirac", TINY_NET, size, model.state_dict(), None, {})
    inputs = {"schedule": tmp_path / "schedule.csv", "model-dt1": tmp_path / "dt1.pt", "model-dt0": tmp_path / "dt0.pt"}
    return tmp_path, inputs


def _problem(tmp, split="test"):
    return load_problem(tmp / "operator.json", tmp / f"{split}.npz", split, torch.device("cpu"))


def _with_recorder(tmp, split="test"):
    return load_problem_and_recorder(tmp / "operator.json", tmp / f"{split}.npz", split, torch.device("cpu"))


def test_reconstruct_returns_outputs_trajectory_and_posterior_samples(setup):
    tmp, inputs = setup
    problem, recorder = _with_recorder(tmp)
    hp = {**VARIANT, **RUN, "variant": "po", "t_stop": 0.5}
    ctx = RunContext(torch.device("cpu"), 1, 0, inputs, recorder=recorder)
    rec = dirac.reconstruct(problem, hp, ctx)
    nfe = SamplerSettings.from_dict(hp).nfe()
    assert nfe == 3 and rec.x_hat.shape == (5, 3, 16, 16) and np.all(rec.nfe == 3)
    traj = rec.trajectory
    assert list(traj.columns) == list(TRAJECTORY_COLUMNS) and len(traj) == 5 * 3
    assert traj["lpips"].isna().all()  # lpips_every 0: no LPIPS
    last = traj[traj["step"] == 2].sort_values("image")
    np.testing.assert_allclose(last["t"], 0.5)
    x = recorder.x.numpy()
    psnr = 10 * np.log10(1 / ((rec.x_hat - x) ** 2).reshape(5, -1).mean(1))
    np.testing.assert_allclose(last["psnr"], psnr, rtol=1e-4)
    post = rec.extras["posterior_samples"]
    assert post["samples"].shape == (2, 3, 3, 16, 16) and list(post["names"]) == ["img0", "img1"]
    assert not np.allclose(post["samples"][0, 0], post["samples"][0, 1])
    # One-shot samples are the deterministic posterior mean; posterior_t_stop runs the path further.
    one_shot = dirac.reconstruct(problem, {**hp, "t_stop": 1.0}, ctx).extras["posterior_samples"]["samples"]
    np.testing.assert_allclose(one_shot[:, 0], one_shot[:, 2], atol=1e-6)
    deeper = dirac.reconstruct(problem, {**hp, "t_stop": 1.0, "posterior_t_stop": 0.0}, ctx).extras["posterior_samples"]["samples"]
    assert not np.allclose(deeper[:, 0], deeper[:, 2], atol=1e-3)
    # Batch composition does not change any image's result.
    rec1 = dirac.reconstruct(problem, {**hp, "batch_size": 1}, ctx)
    np.testing.assert_allclose(rec1.x_hat, rec.x_hat, atol=1e-5, rtol=0)
    np.testing.assert_allclose(rec1.extras["posterior_samples"]["samples"], post["samples"], atol=1e-5, rtol=0)


def test_reconstruct_refuses_untuned_t_stop_and_unknown_keys(setup):
    tmp, inputs = setup
    ctx = RunContext(torch.device("cpu"), 1, 0, inputs)
    with pytest.raises(UserError, match="chosen.yaml"):
        dirac.reconstruct(_problem(tmp), {**VARIANT, **RUN, "variant": "do"}, ctx)
    with pytest.raises(UserError, match="unknown"):
        dirac.reconstruct(_problem(tmp), {**VARIANT, **RUN, "variant": "do", "t_stop": 1.0, "step_size": 3}, ctx)
    with pytest.raises(UserError, match="model-dt0.5"):
        dirac.reconstruct(_problem(tmp), {**VARIANT, **RUN, "variant": "do", "t_stop": 1.0, "model_dt": 0.5}, ctx)


def test_tune_picks_do_at_the_psnr_peak_and_po_by_lpips_or_config(setup):
    _lpips_or_skip()
    tmp, inputs = setup
    problem, recorder = _with_recorder(tmp, "val")
    settings = {
        "variants": {"po": dict(VARIANT), "do": dict(VARIANT)},
        "tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": 2},
        "lpips": RUN["lpips"],
        "batch_size": 4,
    }
    with pytest.raises(UserError, match="clean val images"):  # the path is scored against x, which only the harness holds
        dirac.tune(problem, settings, RunContext(torch.device("cpu"), 1, 0, inputs))
    ctx = RunContext(torch.device("cpu"), 1, 0, inputs, recorder=recorder)
    res = dirac.tune(problem, settings, ctx)
    grid = res.grid
    do = grid[grid["variant"] == "do"]
    assert res.chosen["do"]["t_stop"] == do.loc[do["psnr"].idxmax(), "t"]
    po = grid[grid["variant"] == "po"]
    scored = po.dropna(subset=["lpips"])
    assert list(scored["step"]) == [0, 2, 3]  # every 2nd step and the last
    assert res.chosen["po"]["t_stop"] == scored.loc[scored["lpips"].idxmin(), "t"]
    assert res.chosen["po"]["nfe"] == SamplerSettings.from_dict({**VARIANT, "t_stop": res.chosen["po"]["t_stop"]}).nfe()
    assert grid["chosen"].sum() == 2
    traj = res.trajectory
    assert set(TRAJECTORY_COLUMNS) <= set(traj.columns) and set(traj["variant"]) == {"po", "do"}
    assert len(traj) == 2 * 5 * 4  # shared run, rows per variant
    # A number in the config fixes t_stop; a second model means a second run.
    settings["variants"]["po"] = {**VARIANT, "t_stop": 0.75, "model_dt": 0.0, "guidance": "error", "zeta": 0.5, "output": "iterate"}
    res2 = dirac.tune(problem, settings, ctx)
    assert res2.chosen["po"]["t_stop"] == 0.75 and res2.chosen["po"]["selected_by"]["by"] == "config"
    assert res2.chosen["do"] == res.chosen["do"]


def test_sample_and_tune_clis_write_the_result_files(setup):
    _lpips_or_skip()
    tmp, inputs = setup
    common = ["--operator", str(tmp / "operator.json"), "--input", f"schedule={inputs['schedule']}", "--input", f"model-dt1={inputs['model-dt1']}"]
    tune_settings = {"variants": {"po": VARIANT, "do": VARIANT}, "tuning": {"po_metric": "auto", "do_metric": "psnr", "lpips_every": 1}, "lpips": RUN["lpips"], "batch_size": 8, "seed": 0, "max_images": 4}
    out = tmp / "out"
    tune_cli.main(["--method", "dirac-po", "--settings", json.dumps(tune_settings), *common, "--measurements", str(tmp / "val.npz"), "--out-chosen", str(out / "chosen.yaml"), "--out-grid", str(out / "grid.csv"), "--out-trajectory", str(out / "trajectory.csv")])
    chosen = yaml.safe_load((out / "chosen.yaml").read_text())
    assert set(chosen) == {"po", "do"} and chosen["po"]["selected_by"]["by"] == "fd_vgg"  # auto for inpainting
    assert len(pd.read_csv(out / "trajectory.csv")) == 2 * 4 * 4
    sample_settings = {"max_images": None, "seed": 0, "hparams": {**VARIANT, **RUN, "variant": "po", "lpips_every": 2}}
    sample_cli.main(["--method", "dirac-po", "--settings", json.dumps(sample_settings), *common, "--measurements", str(tmp / "test.npz"), "--tuned", f"{out / 'chosen.yaml'}:po", "--out", str(out / "test.npz"), "--trajectory", str(out / "traj.csv"), "--extra-out", f"posterior_samples={out / 'post.npz'}"])
    with np.load(out / "test.npz") as rec:
        assert rec["x_hat"].shape == (5, 3, 16, 16) and np.all(rec["nfe"] == chosen["po"]["nfe"])
    with np.load(out / "post.npz") as post:
        assert post["samples"].shape == (2, 3, 3, 16, 16)
    traj = pd.read_csv(out / "traj.csv")
    assert traj.dropna(subset=["lpips"])["step"].max() == chosen["po"]["nfe"] - 1  # the last step always gets LPIPS
