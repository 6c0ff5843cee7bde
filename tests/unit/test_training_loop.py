"""The shared training loop: exact resume after SIGTERM, time-budget stops, non-finite losses."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from diracbench.errors import UserError
from diracbench.nn.models import build_model, load_model, save_weights
from diracbench.nn.unet import UNet, UNetConfig, count_parameters
from diracbench.training.loop import NonFiniteLoss, TrainingInterrupted, TrainSettings, lr_at, train

NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [8], "dropout": 0.1}
IMAGES = (np.random.default_rng(0).random((24, 3, 16, 16)) * 255).astype(np.uint8)
SETTINGS = TrainSettings(steps=10, batch_size=6, lr=1e-3, ema_decay=0.9, grad_clip=1.0, checkpoint_every=3, log_every=2, seed=7, bf16=True, channels_last=True)
# The default's recipe: warm-up, cosine decay, bf16 autocast on the CPU.
RECIPE = TrainSettings(**{**SETTINGS.__dict__, "lr_warmup_steps": 3, "lr_decay": "cosine", "cpu_bf16": True})
CPU = torch.device("cpu")


def denoising_loss(model, x0, gen):
    sigma = 0.01 + 0.04 * torch.rand(x0.shape[0], generator=gen)
    y = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=gen)
    return (model(y, sigma) - x0).square().flatten(1).sum(1).mean()


def fresh_model():
    torch.manual_seed(0)
    return build_model("dirac", NET, 16)


def test_resume_after_sigterm_is_bitwise_identical(tmp_path):
    # The default's recipe (warm-up, cosine, CPU bf16, EMA): every piece of state must come back.
    # The old constant-rate fp32 settings resume through the CLI in test_dirac_train.py.
    settings = RECIPE
    reference = train(fresh_model(), denoising_loss, IMAGES, settings, tmp_path / "ref", CPU)
    calls = {"n": 0}

    def interrupted_loss(model, x0, gen):
        calls["n"] += 1
        # Call 6 is step 5, mid-run between two checkpoints: the save at step 3 runs the loss
        # once more on its probe batch (training.producer).
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return denoising_loss(model, x0, gen)

    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        train(fresh_model(), interrupted_loss, IMAGES, settings, tmp_path / "run", CPU)
    resumed = train(fresh_model(), denoising_loss, IMAGES, settings, tmp_path / "run", CPU)
    assert resumed.resumed_from == 5
    for key, value in reference.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key
    for key, value in reference.ema_state_dict.items():
        assert torch.equal(value, resumed.ema_state_dict[key]), key
    assert [row["loss"] for row in resumed.log] == pytest.approx([row["loss"] for row in reference.log])


def test_time_budget_stops_and_saves(tmp_path):
    slow = TrainSettings(**{**SETTINGS.__dict__, "steps": 10_000})
    with pytest.raises(TrainingInterrupted, match="time budget"):
        train(fresh_model(), denoising_loss, IMAGES, slow, tmp_path, CPU, time_budget_s=21.0)
    assert (tmp_path / "state.pt").is_file()


def test_non_finite_loss_names_the_step(tmp_path):
    def bad_loss(model, x0, gen):
        loss = denoising_loss(model, x0, gen)
        return loss * float("nan") if bad_loss.calls >= 3 else loss

    bad_loss.calls = 0

    def counting(model, x0, gen):
        bad_loss.calls += 1
        return bad_loss(model, x0, gen)

    with pytest.raises(NonFiniteLoss, match="step 3"):
        train(fresh_model(), counting, IMAGES, SETTINGS, tmp_path, CPU)


def test_weights_round_trip_and_wrong_checkpoints_fail(tmp_path):
    model = fresh_model()
    path = tmp_path / "w.pt"
    save_weights(path, "dirac", NET, 16, model.state_dict(), None, {"note": "test"})
    loaded = load_model(path, "dirac")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x, torch.full((2,), 0.03)), model.eval()(x, torch.full((2,), 0.03)))
    assert torch.load(path, weights_only=True)["kind"] == "dirac"
    with pytest.raises(UserError, match="'ddpm' model is needed"):
        load_model(path, "ddpm")
    with pytest.raises(UserError, match="32px"):
        load_model(path, "dirac", image_size=32)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        load_model(tmp_path / "junk.pt", "dirac")
    record = torch.load(path, weights_only=True)
    record["state_dict"].pop(next(iter(record["state_dict"])))
    torch.save(record, tmp_path / "damaged.pt")
    with pytest.raises(UserError, match="do not fit"):
        load_model(tmp_path / "damaged.pt", "dirac")
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "missing.pt", "dirac")


def test_paper_network_sizes():
    """The presets' architectures have the parameter counts of the official models (§5.5)."""
    with torch.device("meta"):
        base = UNet(UNetConfig(128, (1, 1, 2, 2, 2, 2, 2), 2, (16,), 0.1), 256, "fourier")
        large = UNet(UNetConfig(256, (1, 1, 2, 2, 4, 4), 2, (32, 16, 8), 0.0), 256, "fourier")
    assert count_parameters(base) == 67_745_027
    assert count_parameters(large) == 520_915_459


def test_learning_rate_schedule():
    assert [lr_at(k, SETTINGS) for k in (0, 5, 9)] == [SETTINGS.lr] * 3  # constant: exactly the rate
    rates = [lr_at(k, RECIPE) for k in range(RECIPE.steps)]
    assert rates[:3] == pytest.approx([RECIPE.lr * f * 0.5 * (1 + np.cos(np.pi * k / 10)) for k, f in enumerate((1 / 3, 2 / 3, 1))])
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))  # decays after the warm-up ...
    assert 0 < rates[-1] < 0.03 * RECIPE.lr  # ... to nearly zero at the last step


def test_cpu_bf16_changes_the_weights_and_the_schedule_is_optional(tmp_path):
    """bf16 on the CPU trains a different (nearby) function; settings without the new keys keep
    the old behaviour, and an unknown decay is one clear error."""
    fp32 = train(fresh_model(), denoising_loss, IMAGES, SETTINGS, tmp_path / "a", CPU)
    bf16 = train(fresh_model(), denoising_loss, IMAGES, TrainSettings(**{**SETTINGS.__dict__, "cpu_bf16": True}), tmp_path / "b", CPU)
    diffs = [float((fp32.state_dict[k] - bf16.state_dict[k]).abs().max()) for k in fp32.state_dict if fp32.state_dict[k].is_floating_point()]
    assert max(diffs) > 0
    assert max(diffs) < 0.05  # ten steps of lr 1e-3 apart: nearby weights
    old = {k: v for k, v in SETTINGS.__dict__.items() if k not in ("lr_warmup_steps", "lr_decay", "cpu_bf16")}
    assert TrainSettings.from_dict(old) == SETTINGS
    with pytest.raises(UserError, match="lr_decay"):
        TrainSettings.from_dict({**old, "lr_decay": "linear"})
