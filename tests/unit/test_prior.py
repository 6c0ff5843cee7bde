"""The DDPM prior: schedule values, the training loss, training through the shared CLI, and the
published architectures (parameter counts, strict loading, loud failures on wrong checkpoints)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from diracbench.errors import UserError
from diracbench.nn.models import build_model, save_weights
from diracbench.prior import PriorModel, load_prior
from diracbench.prior import pretrained as pt
from diracbench.prior.loss import make_loss
from diracbench.prior.schedule import DDPMSchedule

SCHEDULE = DDPMSchedule(1e-4, 2e-2, 1000)
SRC = Path(__file__).resolve().parents[2] / "src"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedule_matches_the_reference_values() -> None:
    ab = SCHEDULE.alphas_cumprod
    assert ab[0] == pytest.approx(0.9999, rel=1e-6)
    assert ab[50] == pytest.approx(0.96995, rel=1e-4)
    assert ab[500] == pytest.approx(0.0778, rel=2e-3)
    assert ab[950] == pytest.approx(1.060e-4, rel=2e-3)
    assert ab[999] == pytest.approx(4.04e-5, rel=3e-3)
    assert SCHEDULE.ve_sigma(0) == pytest.approx(0.0100, rel=1e-2)
    assert SCHEDULE.ve_sigma(950) == pytest.approx(97.1, rel=1e-3)
    assert SCHEDULE.alpha_bar(-1) == 1.0 and SCHEDULE.ve_sigma(-1) == 0.0
    with pytest.raises(UserError):
        DDPMSchedule.from_settings({"beta_start": 1e-4, "beta_end": 2e-2})


class _Oracle(torch.nn.Module):
    """Knows the clean image is the constant `value` in [-1, 1], so it can recover eps exactly."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.ab = torch.as_tensor(SCHEDULE.alphas_cumprod, dtype=torch.float32)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.ab[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * self.value) / (1 - a).sqrt()


def test_loss_is_the_ddpm_simple_loss_on_minus_one_one_images() -> None:
    loss_fn = make_loss(SCHEDULE.to_dict(), {}, torch.device("cpu"))
    x0 = torch.full((6, 3, 8, 8), 0.75)  # = 0.5 in [-1, 1]
    g = torch.Generator().manual_seed(0)
    assert float(loss_fn(_Oracle(0.5), x0, g)) < 1e-8
    # An oracle that assumes the [0, 1] value (a missing range conversion) is far off.
    assert float(loss_fn(_Oracle(0.75), x0, g)) > 1e-4
    zero = torch.nn.Module()
    zero.forward = lambda x, t: torch.zeros_like(x)  # predicting 0 costs E[eps^2] = 1
    assert float(loss_fn(zero, x0, g)) == pytest.approx(1.0, abs=0.1)


def test_loss_draws_every_timestep() -> None:
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            seen.append(t.clone())
            return torch.zeros_like(x)

    loss_fn = make_loss({"beta_start": 1e-4, "beta_end": 2e-2, "num_timesteps": 10}, {}, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        loss_fn(Spy(), torch.rand(8, 3, 4, 4), g)
    t = torch.cat(seen)
    assert t.dtype == torch.int64 and int(t.min()) == 0 and int(t.max()) == 9


def test_train_cli_trains_a_loadable_prior(tmp_path) -> None:
    data = tmp_path / "train.npy"
    np.save(data, (np.random.default_rng(0).random((12, 3, 8, 8)) * 255).astype(np.uint8))
    net = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    training = {"steps": 3, "batch_size": 4, "lr": 1e-3, "ema_decay": None, "grad_clip": 1.0, "checkpoint_every": 2, "log_every": 1, "seed": 0, "bf16": True, "channels_last": True}
    settings = {"network": net, "image_size": 8, "training": training, "loss": SCHEDULE.to_dict()}
    cmd = [sys.executable, "-m", "diracbench.train", "--kind", "ddpm", "--settings", json.dumps(settings), "--data", str(data),
           "--weights", str(tmp_path / "w.pt"), "--log-csv", str(tmp_path / "log.csv"), "--state-root", str(tmp_path / ".state"), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    prior = load_prior(tmp_path / "w.pt", "diracbench", "cpu", image_size=8)
    eps, v = prior(torch.zeros(2, 3, 8, 8), 10)
    assert eps.shape == (2, 3, 8, 8) and v is None
    with pytest.raises(UserError, match="8px"):
        load_prior(tmp_path / "w.pt", "diracbench", "cpu", image_size=16)


# ---------------------------------------------------------------------------------------------
# Published architectures


@pytest.mark.parametrize("name,millions", [("sdedit", 113.7), ("adm-ffhq", 93.6), ("adm-imagenet", 552.8)])
def test_parameter_counts_match_the_published_models(name: str, millions: float) -> None:
    spec = pt.PRETRAINED_FORMATS[name]
    with torch.device("meta"):
        model = spec.build()
    n = sum(p.numel() for p in model.parameters())
    assert n == spec.parameters
    assert round(n / 1e6, 1) == millions


SMALL = {
    "sdedit-small": replace(pt.PRETRAINED_FORMATS["sdedit"], name="sdedit-small", config=replace(pt.PRETRAINED_FORMATS["sdedit"].config, ch=32, ch_mult=(1, 2), resolution=16, attn_resolutions=(8,)), image_size=16),
    "adm-small": replace(pt.PRETRAINED_FORMATS["adm-ffhq"], name="adm-small", config=replace(pt.PRETRAINED_FORMATS["adm-ffhq"].config, image_size=16, model_channels=32, channel_mult=(1, 2), attention_ds=(2,), num_head_channels=16), image_size=16),
}


@pytest.fixture
def small_formats(monkeypatch):
    """Small instances of the two published architectures (same code, smaller widths)."""
    for name, spec in SMALL.items():
        monkeypatch.setitem(pt.PRETRAINED_FORMATS, name, spec)
    return SMALL


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised heads would hide a mis-loaded layer
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("fmt", ["sdedit-small", "adm-small"])
def test_random_instance_round_trips_strictly(tmp_path, small_formats, fmt) -> None:
    original = _randomised(small_formats[fmt].build(), 0)
    torch.save({f"module.{k}": v for k, v in original.state_dict().items()}, tmp_path / "ckpt.pt")  # DataParallel-style keys
    loaded = pt.load_pretrained(tmp_path / "ckpt.pt", fmt)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 800.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), original(x, t))
    out_channels = 6 if fmt == "adm-small" else 3
    assert loaded(x, t).shape == (2, out_channels, 16, 16)
    prior = load_prior(tmp_path / "ckpt.pt", fmt, "cpu", image_size=16)
    eps, v = prior(x, 5)
    assert eps.shape == (2, 3, 16, 16) and ((v is not None) == (fmt == "adm-small"))


def test_wrong_checkpoint_fails_loudly(tmp_path, small_formats) -> None:
    adm = _randomised(small_formats["adm-small"].build(), 1)
    torch.save(adm.state_dict(), tmp_path / "adm.pt")
    with pytest.raises(UserError, match="does not fit format 'sdedit-small'.*missing keys"):
        pt.load_pretrained(tmp_path / "adm.pt", "sdedit-small")
    # Same architecture, different width: every key is there but the shapes differ.
    with pytest.raises(UserError, match="shape mismatches"):
        pt.load_pretrained(tmp_path / "adm.pt", "adm-ffhq")
    # One missing tensor is enough to refuse (no partially random network).
    state = adm.state_dict()
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="1 missing keys"):
        pt.load_pretrained(tmp_path / "partial.pt", "adm-small")


def test_unusable_files_fail_loudly(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_prior(tmp_path / "nope.pt", "sdedit", "cpu", image_size=256)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        pt.load_pretrained(tmp_path / "junk.pt", "sdedit")
    net = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    model = build_model("ddpm", net, 8)
    save_weights(tmp_path / "ours.pt", "ddpm", net, 8, model.state_dict(), None, {})
    with pytest.raises(UserError, match="diracbench weights file"):
        pt.load_pretrained(tmp_path / "ours.pt", "sdedit")
    with pytest.raises(UserError, match="256px"):
        load_prior(tmp_path / "ours.pt", "sdedit", "cpu", image_size=32)
    with pytest.raises(UserError, match="unknown pretrained"):
        pt.load_pretrained(tmp_path / "ours.pt", "ddpm-celeba")
    # A diracbench file of the wrong kind is refused by the diracbench loader too.
    dirac = build_model("dirac", net, 8)
    save_weights(tmp_path / "dirac.pt", "dirac", net, 8, dirac.state_dict(), None, {})
    with pytest.raises(UserError, match="'dirac' model"):
        load_prior(tmp_path / "dirac.pt", "diracbench", "cpu", image_size=8)


def test_learned_range_channels_are_split() -> None:
    class Six(torch.nn.Module):
        def forward(self, x, t):
            return torch.cat([x, -x], dim=1)

    eps, v = PriorModel(Six(), learned_variance=True, description="six")(torch.ones(1, 3, 4, 4), 7)
    assert torch.equal(eps, torch.ones(1, 3, 4, 4)) and torch.equal(v, -torch.ones(1, 3, 4, 4))
