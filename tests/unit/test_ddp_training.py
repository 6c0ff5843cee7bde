"""Data-parallel training and execution settings: they change how a step is computed, not what.

Real `torchrun --nproc_per_node 2` runs (gloo, CPU, one thread per rank) of
`python -m diracbench.train --kind dirac` against one process with the same global batch, plus
in-process checks of gradient accumulation and activation checkpointing. Tolerances are the
measured float differences with margin (README, "Equivalence tolerances").
"""

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

from diracbench.dirac.loss import make_loss
from diracbench.nn.models import build_model, load_model
from diracbench.operators import GeometricNoise, family_from_config, operator_spec
from diracbench.training.distributed import Group
from diracbench.training.loop import Execution, TrainSettings, accumulate_gradients, micro_ranges, train

SRC = Path(__file__).resolve().parents[2] / "src"
NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}
TRAINING = {"network": NET, "steps": 30, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.9, "grad_clip": 1.0, "checkpoint_every": 2, "log_every": 2, "bf16": True, "channels_last": True, "seed": 5}
SETTINGS = {"network": NET, "image_size": 16, "training": TRAINING, "loss": {"dt": 0.5, "clean_space_at_tau0": False}}
# Two ranks against one process after 30 Adam steps (measured max |diff| ~1e-7 .. 1e-6 on the
# 16 px test network, parameters of order 0.1-1): the reduction order of the gradient average
# differs, nothing else.
DDP_ATOL = 2e-5
CPU = torch.device("cpu")


def make_inputs(tmp: Path, n: int = 24) -> dict[str, Path]:
    fam = family_from_config({"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 2.0}, 16)
    (tmp / "operator.json").write_text(json.dumps(operator_spec(fam, GeometricNoise(0.01, 0.05), "deblur")))
    pd.DataFrame({"t": [0, 0.5, 1], "value": [0.3, 0.8, 2.0]}).to_csv(tmp / "schedule.csv", index=False)
    rng = np.random.default_rng(0)
    np.save(tmp / "train.npy", rng.integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8))
    return {"operator": tmp / "operator.json", "schedule": tmp / "schedule.csv", "data": tmp / "train.npy"}


def train_args(inputs: dict[str, Path], out: Path, settings: dict = SETTINGS, threads: int = 1) -> list[str]:
    return [
        "-m", "diracbench.train", "--kind", "dirac", "--settings", json.dumps(settings),
        "--data", str(inputs["data"]), "--input", f"operator={inputs['operator']}", "--input", f"schedule={inputs['schedule']}",
        "--weights", str(out / "weights.pt"), "--log-csv", str(out / "train_log.csv"), "--state-root", str(out / ".state"),
        "--time-budget-min", "60", "--threads", str(threads), "--device", "cpu",
    ]  # fmt: skip


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)


def weights(path: Path) -> dict[str, torch.Tensor]:
    record = torch.load(path, weights_only=True)
    return {**record["state_dict"], **{f"ema.{k}": v for k, v in record["ema_state_dict"].items()}}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """One process and two ranks, uninterrupted, same settings (shared by two tests)."""
    tmp = tmp_path_factory.mktemp("ddp")
    inputs = make_inputs(tmp)
    one = run([sys.executable, *train_args(inputs, tmp / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run([*torchrun(2), *train_args(inputs, tmp / "two", threads=2)])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout
    return inputs, tmp / "one", tmp / "two"


def test_two_ranks_give_the_weights_of_one_process(reference_runs):
    _, one, two = reference_runs
    diff = max_abs_diff(weights(one / "weights.pt"), weights(two / "weights.pt"))
    print(f"\nDDP 2 ranks vs 1 process, {TRAINING['steps']} steps: max |weight diff| = {diff:.3g}")
    assert diff <= DDP_ATOL
    # The logged loss is the global batch's, all-reduced over the ranks.
    l1 = pd.read_csv(one / "train_log.csv")["loss"].to_numpy()
    l2 = pd.read_csv(two / "train_log.csv")["loss"].to_numpy()
    np.testing.assert_allclose(l2, l1, rtol=1e-4)


def test_sigkill_of_one_rank_resumes_to_the_uninterrupted_weights(reference_runs, tmp_path):
    inputs, _, ref = reference_runs
    out = tmp_path / "run"
    proc = subprocess.Popen([*torchrun(2), *train_args(inputs, out, threads=2)], env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((out / ".state").glob("dirac-*/state.pt"))
        if found:
            state = found[0]
            break
        time.sleep(0.02)
    assert state is not None, "no resume state appeared"
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)  # one rank dies without any chance to clean up
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, log[-3000:]
    assert not (out / "weights.pt").exists()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 2 <= killed_at < TRAINING["steps"]
    again = run([*torchrun(2), *train_args(inputs, out, threads=2)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming train dirac from step {killed_at}" in again.stdout
    a, b = weights(ref / "weights.pt"), weights(out / "weights.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_of_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    inputs = make_inputs(tmp_path)
    settings = {**SETTINGS, "training": {**TRAINING, "steps": 100_000, "checkpoint_every": 100_000}}
    out = tmp_path / "run"
    proc = subprocess.Popen([*torchrun(2), *train_args(inputs, out, settings, threads=2)], env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    # settings.json is written just before the loop starts (and its SIGTERM handler with it).
    while time.monotonic() < deadline and proc.poll() is None and not list((out / ".state").glob("dirac-*/settings.json")):
        time.sleep(0.1)
    time.sleep(3)
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGTERM)  # rank 1 only (torchrun numbers its children in order)
    log, _ = proc.communicate(timeout=120)
    # Rank 0 saw no signal: it stops because the all-reduced flag says another rank did.
    assert "(another process stopped); state saved" in log, log[-3000:]
    # Every rank exits 75 ("try again"); torchrun itself reports 1 (README).
    assert "exitcode  : -15" not in log, log[-3000:]
    assert "exitcode  : 75" in log, log[-3000:]
    state = torch.load(next((out / ".state").glob("dirac-*/state.pt")), weights_only=True)
    assert state["step"] > 0


# --- in-process checks (one process, one thread) --------------------------------------------


def _loss(tmp_path: Path):
    inputs = make_inputs(tmp_path, n=64)
    return make_loss(SETTINGS["loss"], {"operator": inputs["operator"], "schedule": inputs["schedule"]}, CPU), np.load(inputs["data"])


def _train(tmp_path: Path, name: str, execution: Execution, batch: int = 32, steps: int = 4):
    loss_fn, images = _loss(tmp_path)
    s = TrainSettings(**{k: v for k, v in {**TRAINING, "batch_size": batch, "steps": steps}.items() if k in TrainSettings.__dataclass_fields__})
    torch.manual_seed(0)
    model = build_model("dirac", NET, 16)
    return train(model, loss_fn, images, s, tmp_path / name, CPU, execution=execution)


def test_gradient_accumulation_2x16_equals_one_batch_of_32(tmp_path, one_thread):
    whole = _train(tmp_path, "whole", Execution())
    accumulated = _train(tmp_path, "acc", Execution(micro_batch=16))
    diff = max_abs_diff(whole.state_dict, accumulated.state_dict)
    print(f"\naccumulation 2x16 vs 32, 4 steps: max |weight diff| = {diff:.3g}")
    assert diff <= DDP_ATOL
    assert [r["loss"] for r in accumulated.log] == pytest.approx([r["loss"] for r in whole.log], rel=1e-5)


def test_accumulated_gradient_is_the_full_batch_mean_gradient(tmp_path, one_thread):
    # Adam hides a wrongly scaled gradient (it is scale-invariant): compare the gradients.
    loss_fn, images = _loss(tmp_path)
    x = torch.from_numpy(images[:32].astype(np.float32) / 255.0)
    draws = loss_fn.draw(tuple(x.shape), torch.Generator().manual_seed(1))
    grads, losses = [], []
    for micro in (None, 16, 8):
        torch.manual_seed(0)
        model = build_model("dirac", NET, 16)
        losses.append(float(accumulate_gradients(model, loss_fn, x, draws, 0, micro_ranges(32, micro), 32, Group(), {"device_type": "cpu", "enabled": False})))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    for g, loss in zip(grads[1:], losses[1:]):
        assert torch.allclose(g, grads[0], rtol=1e-4, atol=1e-6 * float(grads[0].abs().max()))
        assert loss == pytest.approx(losses[0], rel=1e-6)
    assert micro_ranges(32, 16) == [(0, 16), (16, 32)] and micro_ranges(8, 3) == [(0, 3), (3, 6), (6, 8)]


def test_activation_checkpointing_changes_nothing(tmp_path, one_thread):
    plain = _train(tmp_path, "plain", Execution())
    ckpt = _train(tmp_path, "ckpt", Execution(activation_checkpointing=True))
    for k, v in plain.state_dict.items():
        assert torch.equal(v, ckpt.state_dict[k]), k


def test_data_workers_keep_the_order(tmp_path, one_thread):
    plain = _train(tmp_path, "plain", Execution(), batch=8, steps=6)
    workers = _train(tmp_path, "workers", Execution(data_workers=2), batch=8, steps=6)
    for k, v in plain.state_dict.items():
        assert torch.equal(v, workers.state_dict[k]), k


def test_checkpointed_blocks_save_activation_memory(one_thread):
    """Not a speed target: the saved-for-backward bytes must drop, or checkpointing is a no-op."""
    def saved_bytes(on: bool) -> int:
        torch.manual_seed(0)
        model = build_model("dirac", {**NET, "model_channels": 16}, 16).train()
        for m in model.modules():
            if hasattr(m, "checkpoint_blocks"):
                m.checkpoint_blocks = on
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.rand(4, 3, 16, 16), torch.full((4,), 0.03)).sum().backward()
        return total

    assert saved_bytes(True) < 0.5 * saved_bytes(False)
