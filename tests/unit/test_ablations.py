"""The ablations module (Figs. 8-9): look-ahead scores with the default's tuned settings, figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from diracbench import ablations
from diracbench.errors import UserError
from diracbench.methods import dirac
from diracbench.methods.base import RunContext, load_problem_and_recorder
from diracbench.nn.models import build_model, save_weights
from diracbench.operators import GeometricNoise, family_from_config, operator_spec

NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
BASE = {"model_dt": 1.0, "dt": 0.25, "t_stop": "tune", "estimator": "look_ahead", "delta": None, "guidance": "none", "zeta": 0.0, "guidance_sign": "descent", "output": "x0_hat"}
LPIPS = {"net": "vgg", "upsample_below": 64}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from diracbench.metrics.perceptual import LPIPSMetric

    try:
        LPIPSMetric("vgg", 64)
    except UserError as err:
        pytest.skip(f"LPIPS backbone weights unavailable: {err}")
    tmp = tmp_path_factory.mktemp("ablations")
    size, n = 16, 4
    fam = family_from_config({"kind": "inpaint", "mask_std_min": 0.1, "mask_std_max": 4.0, "mask_power": 4}, size)
    (tmp / "operator.json").write_text(json.dumps(operator_spec(fam, GeometricNoise(0.01, 0.05), "inpaint")))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    y = fam.apply(x, 1.0) + 0.05 * torch.randn(x.shape, generator=g)
    np.savez(tmp / "val.npz", x=x.numpy(), y=y.numpy(), names=np.array([f"img{i}" for i in range(n)]), seeds=np.arange(n))
    pd.DataFrame({"t": [0, 1], "value": [0.1, 4.0]}).to_csv(tmp / "schedule.csv", index=False)
    inputs = {"schedule": tmp / "schedule.csv"}
    for dt, seed in ((1.0, 0), (0.5, 1), (0.0, 2)):
        torch.manual_seed(seed)
        model = build_model("dirac", NET, size)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        save_weights(tmp / f"dt{dt:g}.pt", "dirac", NET, size, model.state_dict(), None, {})
        inputs[f"model-dt{dt:g}"] = tmp / f"dt{dt:g}.pt"
    problem, recorder = load_problem_and_recorder(tmp / "operator.json", tmp / "val.npz", "val", torch.device("cpu"))
    return tmp, problem, RunContext(torch.device("cpu"), 1, 0, inputs, recorder=recorder)


def test_lookahead_scores_use_the_default_tuning_and_change_only_the_model(setup):
    tmp, problem, ctx = setup
    variants = {"po": dict(BASE), "do": dict(BASE)}
    tuned = dirac.tune(problem, {"variants": variants, "tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": 1}, "lpips": LPIPS, "batch_size": 4}, ctx)
    settings = {"variants": variants, "look_aheads": [0.0, 0.5, 1.0], "lpips": LPIPS, "batch_size": 4, "images": 2}
    scores, samples = ablations.lookahead_scores(problem, ctx.recorder, settings, tuned.chosen, ctx)
    assert len(scores) == 6 and set(scores["look_ahead"]) == {0.0, 0.5, 1.0}
    for v in ("po", "do"):
        s = scores[scores["variant"] == v]
        assert (s["t_stop"] == tuned.chosen[v]["t_stop"]).all()  # the default's tuned t_stop for every model
    assert samples["dt1"].shape == (2, 3, 16, 16) and samples["x"].shape == (2, 3, 16, 16)
    assert not np.allclose(samples["dt0"], samples["dt1"])  # different models, different outputs
    # Figures draw from these files.
    scores.to_csv(tmp / "scores.csv", index=False)
    np.savez(tmp / "samples.npz", **samples)
    ablations.figure_lookahead(tmp / "scores.csv", tmp / "samples.npz", "test", tmp / "fig9")
    assert (tmp / "fig9.png").stat().st_size > 1000 and (tmp / "fig9.pdf").is_file()
    search = dirac.tune(problem, {"variants": variants, "search": {v: {"model_dt": [0.0, 0.5, 1.0]} for v in variants}, "tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": 1}, "lpips": LPIPS, "batch_size": 4}, ctx)
    search.grid.to_csv(tmp / "path.csv", index=False)
    ablations.figure_lookahead(tmp / "scores.csv", tmp / "samples.npz", "test", tmp / "fig9_path", path_grid=tmp / "path.csv")
    assert (tmp / "fig9_path.png").stat().st_size > (tmp / "fig9.png").stat().st_size  # the dashed lines and legends


def test_guidance_curves_take_the_best_lpips_per_scheme_and_zeta(setup, tmp_path):
    tmp, problem, ctx = setup
    variants = {"po": dict(BASE), "do": dict(BASE)}
    search = {"po": {"guidance": {"none": [0], "std": [0.5, 1.0], "error": [0.5, 1.0]}}}
    res = dirac.tune(problem, {"variants": variants, "search": search, "tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": 1}, "lpips": LPIPS, "batch_size": 4}, ctx)
    curves = ablations.guidance_curves(res.grid)
    assert len(curves) == 5 and set(curves["guidance"]) == {"none", "std", "error"}
    po = res.grid[res.grid["variant"] == "po"]
    for r in curves.itertuples():
        rows = po[(po["param_guidance"] == r.guidance) & (po["param_zeta"] == r.zeta)]
        assert r.lpips == rows["lpips"].min()
    # The tuning's PO choice is the best point of the curves.
    assert res.chosen["po"]["selected_by"]["value"] == pytest.approx(curves["lpips"].min())
    res.grid.to_csv(tmp_path / "grid.csv", index=False)
    ablations.figure_guidance(tmp_path / "grid.csv", "test", tmp_path / "fig8")
    assert (tmp_path / "fig8.png").stat().st_size > 1000
    with pytest.raises(UserError, match="param_guidance"):
        ablations.guidance_curves(res.grid.drop(columns=["param_guidance"]))


def test_own_t_stop_per_model_is_what_tuning_that_model_alone_chooses(setup, tmp_path):
    """Fig. 9's dashed lines: path_bests of the search over model_dt equal, per Δt, the choice and
    score of a tuning run given only that model (brute force over the same paths)."""
    tmp, problem, ctx = setup
    variants = {"po": dict(BASE), "do": dict(BASE)}
    common = {"tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": 1}, "lpips": LPIPS, "batch_size": 4}
    dts = [0.0, 0.5, 1.0]
    res = dirac.tune(problem, {"variants": variants, "search": {v: {"model_dt": dts} for v in variants}, **common}, ctx)
    bests = ablations.path_bests(res.grid)
    assert len(bests) == 6 and set(bests["look_ahead"]) == set(dts)
    for dt in dts:
        alone = dirac.tune(problem, {"variants": {v: {**BASE, "model_dt": dt} for v in variants}, **common}, ctx)
        for v, metric in (("po", "lpips"), ("do", "psnr")):
            row = bests[(bests["look_ahead"] == dt) & (bests["variant"] == v)].iloc[0]
            assert row["metric"] == metric
            assert row["t_stop"] == alone.chosen[v]["t_stop"], (dt, v)
            assert row["value"] == pytest.approx(alone.chosen[v]["selected_by"]["value"], rel=1e-6), (dt, v)
    with pytest.raises(UserError, match="param_model_dt"):
        ablations.path_bests(res.grid.drop(columns=["param_model_dt"]))


def test_a_chosen_file_off_its_grid_is_refused(setup, tmp_path):
    tmp, problem, ctx = setup
    variants = {"po": dict(BASE), "do": dict(BASE)}
    pd.DataFrame([{"variant": v, "step": 0, "t": 1.0, "chosen": True} for v in ("po", "do")]).to_csv(tmp_path / "grid.csv", index=False)
    (tmp_path / "chosen.yaml").write_text(yaml.safe_dump({"po": {"t_stop": 0.5, "nfe": 3}, "do": {"t_stop": 1.0, "nfe": 1}}))
    with pytest.raises(UserError, match="t_stop"):
        ablations._read_chosen(tmp_path / "chosen.yaml", variants)


def test_lookahead_cli_writes_scores_and_samples(setup, tmp_path):
    from diracbench import tune as tune_cli

    tmp, _, ctx = setup
    models = [a for dt in ("0", "1") for a in ("--input", f"model-dt{dt}={tmp / f'dt{dt}.pt'}")]
    common = ["--operator", str(tmp / "operator.json"), "--measurements", str(tmp / "val.npz"), "--input", f"schedule={tmp / 'schedule.csv'}", *models]
    variants = {"po": dict(BASE), "do": dict(BASE)}
    tune_settings = {"variants": variants, "tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": 1}, "lpips": LPIPS, "batch_size": 4, "seed": 0, "max_images": 4}
    tune_cli.main(["--method", "dirac-po", "--settings", json.dumps(tune_settings), *common, "--out-chosen", str(tmp_path / "chosen.yaml"), "--out-grid", str(tmp_path / "grid.csv"), "--out-trajectory", str(tmp_path / "trajectory.csv")])
    settings = {"variants": variants, "look_aheads": [0.0, 1.0], "lpips": LPIPS, "batch_size": 4, "images": 1, "seed": 0, "max_images": 3}
    ablations.main(["lookahead", "--settings", json.dumps(settings), *common, "--chosen", str(tmp_path / "chosen.yaml"), "--out-scores", str(tmp_path / "scores.csv"), "--out-samples", str(tmp_path / "samples.npz")])
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert len(scores) == 4 and (scores["n_images"] == 3).all()
    with np.load(tmp_path / "samples.npz") as s:
        assert set(s.files) == {"x", "y", "names", "dt0", "dt1"} and s["dt0"].shape == (1, 3, 16, 16)
    ablations.main(["figure-lookahead", "--scores", str(tmp_path / "scores.csv"), "--samples", str(tmp_path / "samples.npz"), "--out-stem", str(tmp_path / "fig9")])
    assert (tmp_path / "fig9.pdf").is_file()
    with pytest.raises(UserError, match="param_guidance"):  # a tuning without the guidance sweep
        ablations.main(["figure-guidance", "--grid", str(tmp_path / "grid.csv"), "--out-stem", str(tmp_path / "fig8")])
