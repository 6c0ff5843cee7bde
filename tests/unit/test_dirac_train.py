"""Training a Dirac model through `python -m diracbench.train --kind dirac`, as the train_dirac rule
runs it: killed with SIGKILL mid-run and rerun, it ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diracbench.nn.models import load_model
from diracbench.operators import GeometricNoise, family_from_config, operator_spec

SRC = Path(__file__).resolve().parents[2] / "src"
SETTINGS = {
    "network": {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0},
    "image_size": 16,
    "training": {"network": None, "steps": 32, "batch_size": 4, "lr": 2e-4, "ema_decay": 0.9, "grad_clip": 1.0, "checkpoint_every": 4, "log_every": 2, "bf16": True, "channels_last": True, "seed": 3},
    "loss": {"dt": 0.5, "clean_space_at_tau0": False},
}


def _inputs(tmp: Path) -> dict[str, Path]:
    fam = family_from_config({"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 2.0}, 16)
    (tmp / "operator.json").write_text(json.dumps(operator_spec(fam, GeometricNoise(0.01, 0.05), "deblur")))
    pd.DataFrame({"t": [0, 0.5, 1], "value": [0.3, 0.8, 2.0]}).to_csv(tmp / "schedule.csv", index=False)
    rng = np.random.default_rng(0)
    np.save(tmp / "train.npy", rng.integers(0, 256, size=(10, 3, 16, 16), dtype=np.uint8))
    (tmp / "train_manifest.csv").write_text("index,name\n" + "".join(f"{i},t{i}\n" for i in range(10)))
    return {"operator": tmp / "operator.json", "schedule": tmp / "schedule.csv", "data": tmp / "train.npy"}


def _command(inputs: dict[str, Path], out: Path) -> list[str]:
    settings = {**SETTINGS, "training": {**SETTINGS["training"], "network": SETTINGS["network"]}}
    return [
        sys.executable, "-m", "diracbench.train", "--kind", "dirac", "--settings", json.dumps(settings),
        "--data", str(inputs["data"]), "--input", f"operator={inputs['operator']}", "--input", f"schedule={inputs['schedule']}",
        "--weights", str(out / "weights.pt"), "--log-csv", str(out / "train_log.csv"), "--state-root", str(out.parent / ".state"),
        "--time-budget-min", "60", "--threads", "1", "--device", "cpu",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}


def test_sigkill_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    inputs = _inputs(tmp_path)
    ref_dir, run_dir = tmp_path / "ref" / "dirac-dt0.5", tmp_path / "run" / "dirac-dt0.5"
    done = subprocess.run(_command(inputs, ref_dir), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(_command(inputs, run_dir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state_root = run_dir.parent / ".state"
    deadline = time.monotonic() + 600
    # Kill as soon as the second checkpoint exists: mid-run, with state to resume from.
    while time.monotonic() < deadline and proc.poll() is None:
        states = list(state_root.glob("*/state.pt"))
        if states and torch.load(states[0], weights_only=False)["step"] >= 8:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    assert not (run_dir / "weights.pt").exists()

    again = subprocess.run(_command(inputs, run_dir), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout + again.stderr
    ref = torch.load(ref_dir / "weights.pt", weights_only=True)
    got = torch.load(run_dir / "weights.pt", weights_only=True)
    for key in ("state_dict", "ema_state_dict"):
        assert ref[key].keys() == got[key].keys()
        for name in ref[key]:
            assert torch.equal(ref[key][name], got[key][name]), f"{key}.{name} differs after resume"
    np.testing.assert_allclose(pd.read_csv(run_dir / "train_log.csv")[["step", "loss"]], pd.read_csv(ref_dir / "train_log.csv")[["step", "loss"]])
    assert not list(state_root.glob("*/state.pt"))  # the state folder is removed once the weights exist
    load_model(run_dir / "weights.pt", "dirac", "cpu", image_size=16)
