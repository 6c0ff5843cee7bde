"""Validation curves of a Dirac training recipe: `python -m diracbench.bench recipe`.

Trains one Dirac model with the given `training` settings (the shared training loop, exactly as
`train_dirac` does) and every `every` steps scores the one-shot estimate x̂₀ = Φ(y, σ₁) on the val
measurements: mean PSNR over the images, outputs clipped to [0, 1] (the number `tune_dirac`
reports at t = 1). One CSV row per scored step, with the images seen and the wall-clock time, so
recipes compare at equal steps, images or seconds. This is how the default's recipe was chosen on
val (README, "Training recipe"); nothing here reads the test split.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from diracbench.data import load_split
from diracbench.dirac.loss import make_loss
from diracbench.errors import UserError
from diracbench.nn.models import build_model
from diracbench.operators import load_operator_spec
from diracbench.training.loop import TrainSettings, train

COLUMNS = ["label", "step", "images_seen", "elapsed_s", "val_psnr_one_shot", "val_images"]


def one_shot_psnr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma_1: float) -> float:
    """Mean PSNR (data range 1, clipped) of Φ(y, σ₁); leaves the model's mode as it was."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x_hat = model(y, torch.tensor(sigma_1, device=y.device)).clamp(0, 1)
    model.train(was_training)
    mse = (x_hat - x).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


def run(settings: dict, data: Path, operator: Path, schedule: Path, measurements: Path, every: int, device: torch.device = torch.device("cpu")) -> pd.DataFrame:
    for key in ("network", "image_size", "training", "loss", "label"):
        if key not in settings:
            raise UserError(f"bench recipe: --settings lacks {key!r}")
    images = load_split(data)
    with np.load(measurements) as m:
        x, y = torch.from_numpy(m["x"]).to(device), torch.from_numpy(m["y"]).to(device)
    sigma_1 = float(load_operator_spec(operator)["sigma_1"])
    loss = make_loss(settings["loss"], {"operator": operator, "schedule": schedule}, device)
    tset = TrainSettings.from_dict(settings["training"])
    torch.manual_seed(tset.seed)
    model = build_model("dirac", settings["network"], int(settings["image_size"]))
    rows: list[dict] = []
    start = time.perf_counter()
    scoring = [0.0]

    def after_step(step: int, m: nn.Module) -> None:
        if step % every == 0 or step == tset.steps:
            t0 = time.perf_counter()
            psnr = one_shot_psnr(m, x, y, sigma_1)
            scoring[0] += time.perf_counter() - t0
            # Training time only: the scoring is not part of the recipe's cost.
            rows.append({"label": settings["label"], "step": step, "images_seen": step * tset.batch_size, "elapsed_s": time.perf_counter() - start - scoring[0], "val_psnr_one_shot": psnr, "val_images": len(x)})

    with tempfile.TemporaryDirectory() as state:
        train(model, loss, images, tset, Path(state), device, description=f"recipe {settings['label']}", after_step=after_step)
    return pd.DataFrame(rows, columns=COLUMNS)
