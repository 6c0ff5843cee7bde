"""The incremental-reconstruction loss (paper eq. 14) and its factory for `train --kind dirac`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diracbench.dirac.loss import ir_loss, make_loss
from diracbench.errors import UserError
from diracbench.nn.models import build_model
from diracbench.operators import GeometricNoise, LinearSchedule, TableSchedule, family_from_config, operator_spec
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.inpaint import SmoothMaskFamily

NOISE = GeometricNoise(0.01, 0.05)
TINY_NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
FAMILIES = {
    "blur": lambda: GaussianBlurFamily((16, 16), 9, TableSchedule.from_rows([0, 0.4, 1], [0.3, 0.6, 2.0])),
    "mask": lambda: SmoothMaskFamily((16, 16), LinearSchedule(0.1, 4.0), 4.0),
}


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _model():
    torch.manual_seed(0)
    model = build_model("dirac", TINY_NET, 16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _reference_loss(model, x0, gen, fam, dt, clean):
    """The formula, one image at a time, with the same t and z draws."""
    b = x0.shape[0]
    t = torch.rand(b, generator=gen).double()
    z = torch.randn(x0.shape, generator=gen)
    total = 0.0
    for i in range(b):
        ti = float(t[i])
        sigma = float(NOISE(ti))
        y = fam.apply(x0[i : i + 1], ti) + sigma * z[i : i + 1]
        phi = model(y, torch.tensor([sigma]))
        tau = max(ti - dt, 0.0)
        if clean and tau == 0:
            err = phi - x0[i : i + 1]
        else:
            err = fam.apply(phi, tau) - fam.apply(x0[i : i + 1], tau)
        total = total + err.pow(2).sum() / sigma**2
    return total / b


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dt", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("clean", [False, True])
def test_batched_loss_equals_the_per_image_formula(family, dt, clean):
    fam, model = FAMILIES[family](), _model()
    x0 = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    got = ir_loss(model, x0, torch.Generator().manual_seed(7), fam, NOISE, dt, clean)
    want = _reference_loss(model, x0, torch.Generator().manual_seed(7), fam, dt, clean)
    assert _f(got) == pytest.approx(_f(want), rel=1e-4)


def test_dt_one_is_a_clean_space_loss_and_the_switch_only_matters_for_blur():
    x0 = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model = _model()
    loss = lambda fam, clean: _f(ir_loss(model, x0, torch.Generator().manual_seed(2), fam, NOISE, 1.0, clean))
    mask, blur = FAMILIES["mask"](), FAMILIES["blur"]()
    assert loss(mask, False) == pytest.approx(loss(mask, True), rel=1e-6)  # A_0 of the mask is the identity
    assert loss(blur, False) < loss(blur, True)  # A_0 of the blur is a 0.3 px blur: it hides some error
    # The loss differs between look-aheads (tau matters) and gradients reach the network.
    assert loss(blur, False) != pytest.approx(_f(ir_loss(model, x0, torch.Generator().manual_seed(2), blur, NOISE, 0.0)), rel=1e-3)
    model.zero_grad()
    ir_loss(model, x0, torch.Generator().manual_seed(2), blur, NOISE, 0.5).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def _inputs(tmp: Path) -> dict[str, Path]:
    fam = family_from_config({"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 2.0}, 16)
    op = tmp / "operator.json"
    op.write_text(json.dumps(operator_spec(fam, NOISE, "deblur")))
    sched = tmp / "schedule.csv"
    pd.DataFrame({"t": [0, 0.5, 1], "value": [0.3, 0.7, 2.0]}).to_csv(sched, index=False)
    return {"operator": op, "schedule": sched}


def test_make_loss_uses_the_schedule_and_noise_of_its_inputs(tmp_path):
    inputs = _inputs(tmp_path)
    loss_fn = make_loss({"dt": 0.25, "clean_space_at_tau0": False}, inputs, torch.device("cpu"))
    x0 = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model = _model()
    fam = GaussianBlurFamily((16, 16), 9, TableSchedule.from_rows([0, 0.5, 1], [0.3, 0.7, 2.0]))
    want = ir_loss(model, x0, torch.Generator().manual_seed(5), fam, NOISE, 0.25)
    assert _f(loss_fn(model, x0, torch.Generator().manual_seed(5))) == pytest.approx(_f(want), rel=1e-6)


@pytest.mark.parametrize(("settings", "drop", "match"), [({"dt": 1.0}, None, "clean_space_at_tau0"), ({"dt": 1.0, "clean_space_at_tau0": False, "lr": 1}, None, "unknown"), ({"dt": 1.5, "clean_space_at_tau0": False}, None, r"\[0, 1\]"), ({"dt": 1.0, "clean_space_at_tau0": False}, "schedule", "schedule")])
def test_make_loss_errors_name_the_problem(tmp_path, settings, drop, match):
    inputs = _inputs(tmp_path)
    if drop:
        inputs.pop(drop)
    with pytest.raises(UserError, match=match):
        make_loss(settings, inputs, torch.device("cpu"))


def test_schedule_that_misses_the_measurement_blur_is_rejected(tmp_path):
    inputs = _inputs(tmp_path)
    pd.DataFrame({"t": [0, 1], "value": [0.3, 2.5]}).to_csv(inputs["schedule"], index=False)
    with pytest.raises(UserError, match="measurements use"):
        make_loss({"dt": 1.0, "clean_space_at_tau0": False}, inputs, torch.device("cpu"))
