"""Every registered method through the one contract of `methods/base.py`, on every task.

A method receives a `Problem` (measurements, operator, noise level: no clean images) and a
`RunContext`; the clean images reach it only inside the harness's recorder, which it may pass
reconstructions to but whose images never change its output. Per method and task (16 px images,
tiny networks, a few steps): output shape and range, one NFE and one time per image, an image
alone equals the same image in a batch (per-image seeds), a batched tuning grid equals single
runs, the trajectory's columns, and a bad hyper-parameter is one clear line.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diracbench.errors import UserError
from diracbench.methods import load_method
from diracbench.methods.base import TRAJECTORY_COLUMNS, Problem, Recorder, RunContext
from diracbench.methods.registry import registry
from diracbench.nn.models import build_model, save_weights
from diracbench.operators import GeometricNoise, family_from_config, family_from_spec, operator_spec
from diracbench.operators.registry import operator_kind
from diracbench.tasks import registry as task_registry

pytestmark = pytest.mark.usefixtures("one_thread")

N, SIZE = 3, 16
NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
PRIOR = {"format": "diracbench", "beta_start": 1e-4, "beta_end": 2e-2, "num_timesteps": 1000}
LPIPS = {"net": "vgg", "upsample_below": 64}
TRAJ = {"every": 1, "lpips_every": 0, "lpips": LPIPS}
# Every registered task, through its operator kind's family: a new task is covered by registering it.
TASKS = {name: operator_kind(spec.operator).family for name, spec in task_registry().items()}
DIRAC = {"model_dt": 1.0, "dt": 0.5, "t_stop": 0.0, "estimator": "look_ahead", "delta": None, "guidance": "error", "zeta": 0.5, "guidance_sign": "descent", "output": "iterate",
         "batch_size": N, "lpips_every": 0, "lpips": LPIPS, "posterior_images": 0, "posterior_samples": 0, "posterior_t_stop": None}
# name -> (hparams, NFE per image, a grid key and a second value, a bad setting and what its error names)
METHODS = {
    "dirac-po": ({**DIRAC, "variant": "po"}, 2, None, ({"estimator": "sideways"}, "estimator")),
    "dirac-do": ({**DIRAC, "variant": "do", "guidance": "none", "zeta": 0.0, "output": "x0_hat"}, 2, None, ({"dt": 0.3}, "dt")),
    "dps": ({"steps": 3, "scale": 0.3, "variance": "fixedsmall", "clip_x0": True, "batch_size": N, "prior": PRIOR, "trajectory": TRAJ}, 3, ("scale", 1.0), ({"variance": "wide"}, "variance")),
    "diffpir": ({"steps": 4, "lam": 7.0, "zeta": 0.3, "batch_size": N, "prior": PRIOR, "trajectory": TRAJ}, 3, ("lam", 1.0), ({"zeta": 1.5}, "zeta")),
    "ddrm": ({"steps": 4, "eta": 0.85, "eta_b": 1.0, "blur_threshold": 0.03, "mask_threshold": 0.01, "batch_size": N, "prior": PRIOR, "trajectory": TRAJ}, 4, None, ({"eta": 2.0}, "eta")),
    "pnp-admm": ({"variant": "6M", "init": "measurement", "blur_impl": "matrix", "batch_size": N, "rho": 0.3, "maxiter": 2}, 2, ("rho", 0.6), ({"rho": -1.0}, "rho")),
    "admm-tv": ({"lam": 0.02, "rho": 0.3, "maxiter": 3, "init": "adjoint", "blur_impl": "matrix", "batch_size": N}, 3, ("lam", 0.05), ({"lam": 0.0}, "lam")),
}


def test_every_registered_method_is_covered():
    assert set(registry()) == set(METHODS)


def test_a_problem_holds_no_clean_images():
    assert "x" not in {f.name for f in dataclasses.fields(Problem)}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("contract")
    torch.manual_seed(0)
    save_weights(tmp / "prior.pt", "ddpm", NET, SIZE, build_model("ddpm", NET, SIZE).state_dict(), None, {})
    torch.manual_seed(1)
    model = build_model("dirac", NET, SIZE)
    with torch.no_grad():  # far enough from the zero-initialised output that the path matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_weights(tmp / "dirac.pt", "dirac", NET, SIZE, model.state_dict(), None, {})
    return {"prior": tmp / "prior.pt", "model-dt1": tmp / "dirac.pt", "dir": tmp}


@pytest.fixture(scope="module", params=list(TASKS))
def case(request, weights) -> tuple[Problem, torch.Tensor, RunContext]:
    """(problem, clean images, context without a recorder) of one task, as `measure` makes them."""
    task = request.param
    family = family_from_config(TASKS[task].example_config, SIZE)
    spec = operator_spec(family, GeometricNoise(0.01, 0.05), task)
    family = family_from_spec(spec)
    g = torch.Generator().manual_seed(2)
    x = torch.nn.functional.interpolate(torch.rand(N, 3, 4, 4, generator=g), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    op = family.measurement_operator()
    y = op.forward(x) + 0.05 * torch.randn(x.shape, generator=g)
    schedule = weights["dir"] / f"schedule-{task}.csv"
    pd.DataFrame({"t": [0.0, 0.5, 1.0], "value": family.severity(torch.tensor([0.0, 0.5, 1.0])).tolist()}).to_csv(schedule, index=False)
    (weights["dir"] / f"operator-{task}.json").write_text(json.dumps(spec))
    problem = Problem(y, [f"img{i}" for i in range(N)], spec, family, op, 0.05, "val")
    ctx = RunContext(torch.device("cpu"), 1, 0, inputs={"prior": weights["prior"], "model-dt1": weights["model-dt1"], "schedule": schedule})
    return problem, x, ctx


@pytest.mark.parametrize("name", list(METHODS))
def test_method_contract(name, case):
    problem, x, ctx = case
    method = load_method(name)
    hp, nfe, grid, (bad, key) = METHODS[name]
    assert not hasattr(problem, "x")

    # The recorder's clean images never change the output: with the truth, with wrong "truth", without.
    rec = method.reconstruct(problem, hp, dataclasses.replace(ctx, recorder=Recorder.for_problem(problem, x)))
    lied = method.reconstruct(problem, hp, dataclasses.replace(ctx, recorder=Recorder.for_problem(problem, 1.0 - x)))
    quiet = method.reconstruct(problem, hp, ctx)
    assert np.array_equal(rec.x_hat, quiet.x_hat) and np.array_equal(lied.x_hat, quiet.x_hat)

    assert rec.x_hat.shape == (N, 3, SIZE, SIZE) and rec.x_hat.dtype == np.float32
    assert np.isfinite(rec.x_hat).all() and rec.x_hat.min() >= 0.0 and rec.x_hat.max() <= 1.0
    assert rec.nfe.shape == (N,) and (rec.nfe == nfe).all()
    assert rec.seconds.shape == (N,) and (rec.seconds > 0).all() and np.isfinite(rec.seconds).all()

    # The trajectory: the contract's columns, every image, its last row at the method's NFE.
    tr = rec.trajectory
    assert quiet.trajectory is None and tr is not None and list(tr.columns) == list(TRAJECTORY_COLUMNS)
    assert sorted(tr["image"].unique().tolist()) == list(range(N)) and (tr["name"] == [f"img{i}" for i in tr["image"]]).all()
    assert (tr.groupby("image")["nfe"].max() == nfe).all() and tr["dc"].notna().all() and np.isfinite(tr["psnr"]).all()
    assert not tr["psnr"].equals(lied.trajectory["psnr"])  # scored against what the recorder holds

    # Per-image seeds: an image alone is the same image in its batch.
    alone = method.reconstruct(problem.select([1]), {**hp, "batch_size": 1}, ctx)
    np.testing.assert_allclose(alone.x_hat, quiet.x_hat[1:2], atol=2e-5, rtol=0)

    # A tuning grid in one batched run equals its single runs.
    if grid is not None and hasattr(method, "reconstruct_grid"):
        other = {**hp, grid[0]: grid[1]}
        runs = method.reconstruct_grid(problem, [hp, other], ctx)
        assert [r.x_hat.shape for r in runs] == [(N, 3, SIZE, SIZE)] * 2 and all(r.nfe.shape == r.seconds.shape == (N,) for r in runs)
        np.testing.assert_allclose(runs[0].x_hat, quiet.x_hat, atol=2e-5, rtol=0)
        np.testing.assert_allclose(runs[1].x_hat, method.reconstruct(problem, other, ctx).x_hat, atol=2e-5, rtol=0)
        assert np.abs(runs[0].x_hat - runs[1].x_hat).max() > 1e-4

    # A bad hyper-parameter: one line that names it.
    with pytest.raises(UserError) as err:
        method.reconstruct(problem, {**hp, **bad}, ctx)
    assert "\n" not in str(err.value) and key in str(err.value)
