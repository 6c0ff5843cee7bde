"""Resume state that survives edits honestly, and only loads what is safe and current.

Every case interrupts a real `python -m diracbench.train` (SIGTERM once its first state is saved),
then reruns it from an edited copy of the source tree, with a planted pickle at the state path,
or with changed data.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ddp_training import SETTINGS, SRC, TRAINING, make_inputs, train_args, weights  # noqa: E402

LONG = {**SETTINGS, "training": {**TRAINING, "steps": 30, "checkpoint_every": 3}}


def env(src: Path = SRC, **extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(src), **extra}


def run(inputs, out, src: Path = SRC, *extra: str, **env_extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *train_args(inputs, out, LONG), *extra], env=env(src, **env_extra), capture_output=True, text=True, timeout=300)


def interrupt(inputs, out) -> Path:
    """Start training, SIGTERM it once a state exists; return the state file."""
    proc = subprocess.Popen([sys.executable, *train_args(inputs, out, LONG)], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list((out / ".state").glob("dirac-*/state.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    return next((out / ".state").glob("dirac-*/state.pt"))


def edited_tree(tmp: Path, rel: str, old: str, new: str) -> Path:
    """A copy of src/ with one edit (the installed tree stays untouched)."""
    dst = tmp / "src-edited"
    shutil.copytree(SRC, dst, ignore=shutil.ignore_patterns("__pycache__"))
    path = dst / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))
    return dst


def reference(tmp: Path, inputs) -> dict[str, torch.Tensor]:
    done = run(inputs, tmp / "ref")
    assert done.returncode == 0, done.stderr[-2000:]
    return weights(tmp / "ref" / "weights.pt")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Inputs, one interrupted run and the uninterrupted weights, made once for the module."""
    tmp = tmp_path_factory.mktemp("resume")
    inputs = make_inputs(tmp)
    interrupt(inputs, tmp / "run")
    return inputs, tmp / "run", reference(tmp, inputs)


def copy_of(interrupted, tmp: Path):
    """(inputs, run dir, state file, reference weights) with a private copy of the run dir."""
    inputs, run_dir, ref = interrupted
    mine = tmp / "run"
    shutil.copytree(run_dir, mine)
    return inputs, mine, next((mine / ".state").glob("dirac-*/state.pt")), ref


def test_the_state_loads_as_plain_tensors(interrupted, tmp_path):
    _, _, state_path, _ = copy_of(interrupted, tmp_path)
    state = torch.load(state_path, weights_only=True)
    assert state["step"] >= 3 and state["producer"]["fingerprint"]["loss"] > 0


def test_a_logging_only_edit_resumes_to_the_same_weights(interrupted, tmp_path):
    inputs, _, _, ref = copy_of(interrupted, tmp_path)
    src = edited_tree(tmp_path, "diracbench/training/loop.py", 'print(f"resuming {description} from step {step} ({state_path})", flush=True)', 'print(f"resuming {description} from step {step} ({state_path}) [edited log line]", flush=True)')
    done = run(inputs, tmp_path / "run", src)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "but not the trained function" in done.stdout and "[edited log line]" in done.stdout
    got = weights(tmp_path / "run" / "weights.pt")
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_a_network_edit_is_refused_and_the_override_works(interrupted, tmp_path):
    inputs, _, state, _ = copy_of(interrupted, tmp_path)
    step = torch.load(state, weights_only=True)["step"]
    src = edited_tree(tmp_path, "diracbench/nn/unet.py", "h = F.silu(self.norm0(x))", "h = F.gelu(self.norm0(x))")
    refused = run(inputs, tmp_path / "run", src)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "trains a different function" in lines[0] and "--on-code-change resume" in lines[0] and "restart" in lines[0]
    assert state.is_file() and not (tmp_path / "run" / "weights.pt").exists()
    # The training process and the refusal's probe leave the state alone.
    assert torch.load(state, weights_only=True)["step"] == step

    resumed = run(inputs, tmp_path / "run", src, DIRACBENCH_ON_CODE_CHANGE="resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming train dirac from step {step}" in resumed.stdout and "continuing those weights" in resumed.stdout
    assert torch.load(tmp_path / "run" / "weights.pt", weights_only=True)["meta"]["resumed_from"] == step


def test_restart_starts_from_step_zero(interrupted, tmp_path):
    inputs, _, _, _ = copy_of(interrupted, tmp_path)
    src = edited_tree(tmp_path, "diracbench/nn/unet.py", "h = F.silu(self.norm0(x))", "h = F.gelu(self.norm0(x))")
    restarted = run(inputs, tmp_path / "run", src, "--on-code-change", "restart")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "starting over from step 0" in restarted.stdout
    assert torch.load(tmp_path / "run" / "weights.pt", weights_only=True)["meta"]["resumed_from"] == 0


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_is_refused_without_running_it(interrupted, tmp_path):
    inputs, _, state, _ = copy_of(interrupted, tmp_path)
    marker = tmp_path / "PWNED"
    state.write_bytes(pickle.dumps({"step": 1, "model": _Payload(marker)}))
    # torch.save's zip format too: what a checkpoint at that path would look like.
    done = run(inputs, tmp_path / "run")
    assert done.returncode == 2 and "not plain tensors" in done.stderr, done.stderr[-2000:]
    assert not marker.exists()
    torch.save({"step": 1, "model": _Payload(marker)}, state)
    done = run(inputs, tmp_path / "run")
    assert done.returncode == 2 and "not plain tensors" in done.stderr, done.stderr[-2000:]
    assert not marker.exists()


def test_changed_data_with_the_same_sources_does_not_resume_stale_state(interrupted, tmp_path):
    shared, _, _, _ = copy_of(interrupted, tmp_path)
    # Same file name, same manifest (if any): other pixels, as after a data-code change.
    inputs = {k: tmp_path / v.name for k, v in shared.items()}
    for k, v in shared.items():
        shutil.copy(v, inputs[k])
    pixels = np.load(inputs["data"])
    np.save(inputs["data"], (pixels // 2).astype(np.uint8))
    ref = reference(tmp_path, inputs)
    done = run(inputs, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" not in done.stdout
    got = weights(tmp_path / "run" / "weights.pt")
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
