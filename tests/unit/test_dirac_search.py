"""Dirac's tuning search (methods/dirac_tuning.py) against a brute force over the same grid.

The tuning reads t_stop and the output off one full reverse run per distinct sampler setting;
the brute force reruns the method once per candidate and t_stop (`dirac.reconstruct`, stopped
there) and scores each output on its own. Both must agree on every grid value and on the choice.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from diracbench import tune as tune_cli
from diracbench.contracts import check_chosen
from diracbench.errors import UserError
from diracbench.methods import dirac, dirac_tuning
from diracbench.methods.base import RunContext, load_problem_and_recorder
from diracbench.nn.models import build_model, save_weights
from diracbench.operators import GeometricNoise, family_from_config, operator_spec

NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
BASE = {"model_dt": 1.0, "dt": 0.25, "t_stop": "tune", "estimator": "look_ahead", "delta": None, "guidance": "none", "zeta": 0.0, "guidance_sign": "descent", "output": "x0_hat"}
LPIPS = {"net": "vgg", "upsample_below": 16}  # 16 px tiles as they are: a quarter of the VGG cost
SEARCH = {
    "po": {"model_dt": [0.0, 1.0], "dt": [0.25, 0.5], "guidance": {"none": [0], "std": [0.5], "error": [1.0]}, "output": ["x0_hat", "iterate"]},
    "do": {"model_dt": [0.0, 1.0], "dt": [0.25, 0.5]},
}


@pytest.fixture(scope="module")
def lpips_metric():
    from diracbench.metrics.perceptual import LPIPSMetric

    try:
        return LPIPSMetric(LPIPS["net"], LPIPS["upsample_below"])
    except UserError as err:
        pytest.skip(f"LPIPS backbone weights unavailable: {err}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("search")
    size, n = 16, 5
    fam = family_from_config({"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 1.2}, size)
    noise = GeometricNoise(0.01, 0.05)
    (tmp_path / "operator.json").write_text(json.dumps(operator_spec(fam, noise, "deblur")))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    y = fam.apply(x, 1.0) + 0.05 * torch.randn(x.shape, generator=g)
    np.savez(tmp_path / "val.npz", x=x.numpy(), y=y.numpy(), names=np.array([f"img{i}" for i in range(n)]), seeds=np.arange(n))
    pd.DataFrame({"t": [0, 0.5, 1], "value": [0.3, 0.6, 1.2]}).to_csv(tmp_path / "schedule.csv", index=False)
    for dt, seed in ((1.0, 0), (0.0, 1)):
        torch.manual_seed(seed)
        model = build_model("dirac", NET, size)
        with torch.no_grad():  # a random residual net far enough from zero that the path matters
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        save_weights(tmp_path / f"dt{dt:g}.pt", "dirac", NET, size, model.state_dict(), None, {})
    inputs = {"schedule": tmp_path / "schedule.csv", "model-dt1": tmp_path / "dt1.pt", "model-dt0": tmp_path / "dt0.pt"}
    problem, recorder = load_problem_and_recorder(tmp_path / "operator.json", tmp_path / "val.npz", "val", torch.device("cpu"))
    return tmp_path, problem, RunContext(torch.device("cpu"), 1, 0, inputs, recorder=recorder)


def _settings(search, every=2):
    return {
        "variants": {"po": dict(BASE), "do": dict(BASE)},
        "search": search,
        "tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": every},
        "lpips": LPIPS,
        "batch_size": 5,
    }


def _brute_force(problem, ctx, metric, cand: dict, t_stop: float, seed_variant: str = "tune"):
    """One separate run of the method stopped at t_stop; (mean PSNR, mean LPIPS) of its output."""
    hp = {**cand, "t_stop": t_stop, "variant": cand["variant"], "batch_size": 2, "lpips_every": 0, "lpips": LPIPS, "posterior_images": 0, "posterior_samples": 0, "posterior_t_stop": None}
    # The tuning seeds every run with the 'tune' stream: the brute force must use the same noise.
    orig = problem.image_seeds
    problem.image_seeds = lambda *parts: orig("dirac", seed_variant, ctx.seed)
    try:
        rec = dirac.reconstruct(problem, hp, ctx, extras=False)
    finally:
        problem.image_seeds = orig
    x = ctx.recorder.x.clamp(0, 1)
    out = torch.from_numpy(rec.x_hat)
    psnr = float((10 * torch.log10(1 / (out - x).pow(2).flatten(1).mean(1))).mean())
    return psnr, float(metric(out, x).mean())


@pytest.fixture(scope="module")
def searched(setup, lpips_metric):
    _, problem, ctx = setup
    return dirac.tune(problem, _settings(SEARCH), ctx)


def test_tuning_picks_the_grid_point_a_brute_force_over_the_same_grid_picks(setup, lpips_metric, searched):
    _, problem, ctx = setup
    res = searched
    grid = res.grid
    params = ["model_dt", "dt", "guidance", "zeta", "output"]
    assert [c for c in grid.columns if c.startswith("param_")] == [f"param_{k}" for k in params]
    for v, objective in (("po", "lpips"), ("do", "psnr")):
        rows = grid[(grid["variant"] == v)].dropna(subset=[objective])
        n_cands = len(dirac_tuning.candidates({**BASE, "variant": v}, SEARCH[v]))
        assert rows[[f"param_{k}" for k in params]].drop_duplicates().shape[0] == n_cands
        brute = []
        for _, row in rows.iterrows():
            cand = {**BASE, "variant": v, **{k: row[f"param_{k}"] for k in params}}
            psnr, lp = _brute_force(problem, ctx, lpips_metric, cand, float(row["t"]))
            # Every grid value read off the shared run equals the separate, stopped run's.
            np.testing.assert_allclose(row["psnr"], psnr, rtol=1e-5, err_msg=f"{v} {cand} t={row['t']}")
            if not np.isnan(row["lpips"]):
                np.testing.assert_allclose(row["lpips"], lp, rtol=1e-4, atol=1e-6, err_msg=f"{v} {cand} t={row['t']}")
            brute.append(((psnr if objective == "psnr" else lp), {**{k: row[f"param_{k}"] for k in params}, "t_stop": float(row["t"])}))
        values = np.array([b[0] for b in brute])
        best = int(np.argmax(values) if objective == "psnr" else np.argmin(values))
        picked = {k: res.chosen[v][k] for k in params + ["t_stop"]}
        mine = next(i for i, b in enumerate(brute) if b[1] == picked)
        # The tuning's choice is the brute force's optimum (ties: equal up to float rounding) ...
        np.testing.assert_allclose(values[mine], values[best], rtol=1e-6, atol=1e-9)
        gap = np.sort(np.abs(values - values[best]))[1]
        if gap > 1e-5:  # ... and exactly its point when the optimum is unique
            assert picked == brute[best][1]
    # The searched values reach chosen.yaml, whose contract check accepts them.
    assert set(res.chosen["po"]) == {"t_stop", "nfe", "selected_by", *params}
    assert res.grid["chosen"].sum() == 2


def test_the_search_covers_guidance_outputs_and_models(setup, searched):
    _, problem, _ = setup
    res = searched
    po = res.grid[res.grid["variant"] == "po"]
    assert set(po["param_guidance"]) == {"none", "std", "error"} and set(po["param_output"]) == {"x0_hat", "iterate"}
    assert set(po["quantity"]) == {"x0_hat", "iterate"} and (po["quantity"] == po["param_output"]).all()
    assert set(po["param_model_dt"]) == {0.0, 1.0} and set(po["param_dt"]) == {0.25, 0.5}
    # none's zeta is 0 whatever the list says; guided candidates keep theirs.
    assert set(po.loc[po["param_guidance"] == "none", "param_zeta"]) == {0.0}
    # Guidance changes the path after the first step (and not the first x0_hat).
    first = po[(po["step"] == 0) & (po["param_model_dt"] == 1.0) & (po["param_dt"] == 0.25) & (po["quantity"] == "x0_hat")]
    assert first["psnr"].nunique() == 1
    later = po[(po["step"] == 3) & (po["param_model_dt"] == 1.0) & (po["param_dt"] == 0.25) & (po["quantity"] == "x0_hat")]
    assert later["psnr"].nunique() == 3
    # The trajectory holds the chosen candidate's path per variant.
    for v in ("po", "do"):
        steps = round(1 / res.chosen[v]["dt"])
        assert len(res.trajectory[res.trajectory["variant"] == v]) == steps * len(problem)


def test_an_empty_search_is_the_t_stop_only_tuning(setup, lpips_metric):
    _, problem, ctx = setup
    plain = dirac.tune(problem, {k: v for k, v in _settings({}).items() if k != "search"}, ctx)
    same = dirac.tune(problem, _settings({"po": {}, "do": {}}), ctx)
    pd.testing.assert_frame_equal(plain.grid, same.grid)
    assert plain.chosen == same.chosen and set(plain.chosen["po"]) == {"t_stop", "nfe", "selected_by"}
    assert not any(c.startswith("param_") for c in plain.grid.columns)
    # A one-point search names its values but chooses the same t_stop from the same numbers.
    single = dirac.tune(problem, _settings({"po": {"guidance": {"none": [0]}, "output": ["x0_hat"]}}), ctx)
    assert single.chosen["po"]["t_stop"] == plain.chosen["po"]["t_stop"] and single.chosen["po"]["guidance"] == "none"
    np.testing.assert_array_equal(single.grid["psnr"].to_numpy(), plain.grid["psnr"].to_numpy())


def test_fixed_t_stop_with_a_search_compares_candidates_at_that_step(setup, lpips_metric):
    _, problem, ctx = setup
    s = _settings({"do": {"model_dt": [0.0, 1.0]}})
    s["variants"]["do"]["t_stop"] = 0.5
    res = dirac.tune(problem, s, ctx)
    do = res.grid[res.grid["variant"] == "do"]
    at = do[np.isclose(do["t"], 0.5)]
    assert len(at) == 2 and res.chosen["do"]["t_stop"] == 0.5
    assert res.chosen["do"]["model_dt"] == at.loc[at["psnr"].idxmax(), "param_model_dt"]


def test_search_choices_are_the_samplers_and_the_module_is_torch_free():
    import subprocess
    import sys

    from diracbench.dirac import sampler

    assert (dirac_tuning.ESTIMATORS, dirac_tuning.GUIDANCE, dirac_tuning.OUTPUTS) == (sampler.ESTIMATORS, sampler.GUIDANCE, sampler.OUTPUTS)
    code = "import sys, diracbench.methods.dirac_tuning as t; t.candidates({'guidance': 'none'}, {}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_search_spaces_are_one_line_errors(setup):
    _, problem, ctx = setup
    for search, match in (
        ({"po": {"zeta": [1.0]}}, "unknown keys"),
        ({"po": {"guidance": {"strong": [1.0]}}}, "unknown guidance scheme"),
        ({"po": {"output": ["final"]}}, "output values"),
        ({"xo": {}}, "unknown variants"),
        ({"po": {"dt": []}}, "non-empty"),
    ):
        with pytest.raises(UserError, match=match):
            dirac.tune(problem, _settings(search), ctx)


def test_cli_writes_searched_values_that_sample_accepts(setup, lpips_metric):
    tmp, _, _ = setup
    s = {**_settings({"po": {"guidance": {"none": [0], "std": [0.5]}, "output": ["x0_hat", "iterate"]}}), "seed": 0, "max_images": 4}
    out = tmp / "out"
    tune_cli.main(["--method", "dirac-po", "--settings", json.dumps(s), "--operator", str(tmp / "operator.json"), "--measurements", str(tmp / "val.npz"),
                   "--input", f"schedule={tmp / 'schedule.csv'}", "--input", f"model-dt1={tmp / 'dt1.pt'}",
                   "--out-chosen", str(out / "chosen.yaml"), "--out-grid", str(out / "grid.csv"), "--out-trajectory", str(out / "trajectory.csv")])
    chosen = yaml.safe_load((out / "chosen.yaml").read_text())
    assert {"guidance", "zeta", "output"} <= set(chosen["po"])
    for v in ("po", "do"):
        check_chosen(out / "chosen.yaml", chosen[v], v, {**BASE, "variant": v})
    # A value that is on the grid but not the chosen point is refused.
    flipped = dict(chosen["po"], output="iterate" if chosen["po"]["output"] == "x0_hat" else "x0_hat")
    with pytest.raises(UserError, match="output"):
        check_chosen(out / "chosen.yaml", flipped, "po", {**BASE, "variant": "po"})
