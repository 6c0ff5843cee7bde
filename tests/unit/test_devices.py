"""Devices fail fast: `--device cuda` without usable CUDA is one error line, exit 2, nothing written;
and every reason CUDA can be unusable gets its own message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diracbench.errors import UserError
from diracbench.runtime import explain_cuda_failure, resolve_device

SRC = Path(__file__).resolve().parents[2] / "src"
no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: --device cuda would run")

TINY_NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
TRAINING = {"steps": 2, "batch_size": 4, "lr": 1e-3, "ema_decay": None, "grad_clip": 1.0, "checkpoint_every": 1, "log_every": 1, "seed": 0, "bf16": False, "channels_last": False}


def test_cpu_and_auto_resolve_without_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "mps:0"])
def test_unknown_devices_are_refused(name):
    with pytest.raises(UserError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@no_cuda_here
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_an_error_not_a_fallback(name):
    with pytest.raises(UserError) as err:
        resolve_device(name)
    message = str(err.value)
    assert "\n" not in message and f"--device {name} was requested" in message
    assert "no CUDA device is visible" in message or "no CUDA support" in message


@pytest.mark.parametrize(
    "build, driver, count, init_error, expected",
    [
        (None, None, 0, None, "has no CUDA support"),
        ("13.0", None, 0, "RuntimeError: Found no NVIDIA driver on your system.", "no CUDA device is visible: no NVIDIA driver"),
        ("13.0", (12, 4), 0, "RuntimeError: The NVIDIA driver on your system is too old (found version 12040).", "supports CUDA up to 12.4, older than the CUDA 13.0"),
        ("12.6", (12, 2), 0, "RuntimeError: The NVIDIA driver on your system is too old (found version 12020).", "is too old for this torch build (CUDA 12.6)"),
        ("12.6", (12, 8), 0, "RuntimeError: No CUDA GPUs are available", "no CUDA device is visible on"),
        ("12.6", (12, 8), 0, None, "no CUDA device is visible on"),
        ("12.6", (12, 8), 0, "RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported", "CUDA failed to initialise"),
        ("12.6", (12, 8), 2, None, None),
    ],
    ids=["cpu-build", "no-driver", "driver-older-major", "driver-too-old-minor", "none-visible", "count-zero", "init-error", "usable"],
)
def test_each_reason_gets_its_message(build, driver, count, init_error, expected):
    message = explain_cuda_failure("2.14.1+cu130", build, driver, count, init_error)
    if expected is None:
        assert message is None
    else:
        assert expected in message and "\n" not in message
    if build == "13.0" and driver == (12, 4):
        assert "pip" not in message or "torch==2.14.1" in message  # keep the pinned version
        assert "CUDA <= 12.4" in message


def _run(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess, stage: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one line, no traceback, no warnings
    assert lines[0].startswith(f"{stage}: error: --device cuda was requested but ")
    return lines[0]


@no_cuda_here
def test_train_cli_with_cuda_stops_at_once_and_writes_nothing(tmp_path):
    data = tmp_path / "data" / "train.npy"
    data.parent.mkdir()
    np.save(data, (np.random.default_rng(0).random((8, 3, 8, 8)) * 255).astype(np.uint8))
    settings = {"network": TINY_NET, "image_size": 8, "training": TRAINING, "loss": {"beta_start": 1e-4, "beta_end": 2e-2, "num_timesteps": 10}}
    out = tmp_path / "out"

    def train(device: str) -> subprocess.CompletedProcess:
        return _run("diracbench.train", ["--kind", "ddpm", "--settings", json.dumps(settings), "--data", str(data), "--weights", str(out / "w.pt"),
                                         "--log-csv", str(out / "log.csv"), "--state-root", str(out / ".state"), "--device", device])

    _one_error_line(train("cuda"), "diracbench.train")
    assert not out.exists()  # no weights, no log, no resume state
    control = train("cpu")  # the same command trains and writes on the CPU
    assert control.returncode == 0, control.stderr[-2000:]
    assert (out / "w.pt").is_file()


@no_cuda_here
@pytest.mark.parametrize("stage", ["sample", "tune"])
def test_sample_and_tune_clis_check_the_device_before_reading_anything(stage, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "missing"
    common = ["--method", "dirac-po", "--operator", str(missing / "operator.json"), "--measurements", str(missing / "val.npz")]
    outputs = {
        "sample": ["--out", str(out / "test.npz"), "--trajectory", str(out / "trajectory.csv")],
        "tune": ["--out-chosen", str(out / "chosen.yaml"), "--out-grid", str(out / "grid.csv"), "--out-trajectory", str(out / "t.csv")],
    }[stage]
    line = _one_error_line(_run(f"diracbench.{stage}", [*common, *outputs, "--device", "cuda"]), f"diracbench.{stage}")
    assert "missing" not in line  # the device is checked first: the missing inputs are not what stopped it
    assert not out.exists()
    control = _run(f"diracbench.{stage}", [*common, *outputs, "--device", "cpu"])
    assert control.returncode == 2 and "CUDA" not in control.stderr  # on the CPU it gets as far as the inputs
