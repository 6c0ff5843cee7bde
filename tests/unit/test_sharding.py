"""Sharded, resumed and plain `sample` runs give the same files bit for bit, for every method.

Each method runs through the real CLI (`python -m diracbench.sample` / `gather`, in-process) on a
tiny inpainting problem of 5 images with batch size 2, so the split has three batches and the last
one is short (torch methods) or padded (scico methods). `seconds` is a wall-clock measurement and
is the only array not compared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diracbench import gather as gather_cli
from diracbench import sample as sample_cli
from diracbench.errors import UserError
from diracbench.methods import load_method
from diracbench.methods.base import RunContext, load_problem_and_recorder
from diracbench.nn.models import build_model, save_weights
from diracbench.operators import GeometricNoise, family_from_config, operator_spec
from diracbench.sharding import batch_plan, shard_batches

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[2] / "src"
NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
PRIOR = {"format": "diracbench", "beta_start": 1e-4, "beta_end": 2e-2, "num_timesteps": 1000}
TRAJ = {"every": 1, "lpips_every": 0, "lpips": {"net": "vgg", "upsample_below": 64}}
N, SIZE = 5, 16

SETTINGS = {
    "dps": {"hparams": {"steps": 6, "scale": 0.3, "variance": "fixedsmall", "clip_x0": True, "batch_size": 2, "prior": PRIOR, "trajectory": TRAJ}},
    "ddrm": {"hparams": {"steps": 4, "eta": 0.85, "eta_b": 1.0, "blur_threshold": 0.03, "mask_threshold": 0.01, "batch_size": 2, "prior": PRIOR, "trajectory": TRAJ}},
    "dirac-po": {"hparams": {"variant": "po", "model_dt": 1.0, "dt": 0.25, "t_stop": 0.25, "estimator": "look_ahead", "delta": None, "guidance": "error", "zeta": 0.5, "guidance_sign": "descent",
                             "output": "iterate", "batch_size": 2, "lpips_every": 0, "lpips": {"net": "vgg", "upsample_below": 64}, "posterior_images": 3, "posterior_samples": 2, "posterior_t_stop": None}},
    "pnp-admm": {"hparams": {"variant": "6M", "init": "measurement", "blur_impl": "fft", "batch_size": 2, "rho": 0.3, "maxiter": 2}},
    "admm-tv": {"hparams": {"lam": 0.02, "rho": 0.3, "maxiter": 5, "init": "adjoint", "blur_impl": "matrix", "batch_size": 2}},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shard")
    fam = family_from_config({"kind": "inpaint", "mask_std_min": 0.1, "mask_std_max": 4.0, "mask_power": 4}, SIZE)
    (tmp / "operator.json").write_text(json.dumps(operator_spec(fam, GeometricNoise(0.01, 0.05), "inpaint")))
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(N, 3, 4, 4, generator=g), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    y = fam.apply(x, 1.0) + 0.05 * torch.randn(x.shape, generator=g)
    np.savez(tmp / "test.npz", x=x.numpy(), y=y.numpy(), names=np.array([f"img{i}" for i in range(N)]), seeds=np.arange(N))
    pd.DataFrame({"t": [0, 0.5, 1], "value": [0.1, 1.5, 4.0]}).to_csv(tmp / "schedule.csv", index=False)
    torch.manual_seed(0)
    prior = build_model("ddpm", NET, SIZE)
    save_weights(tmp / "prior.pt", "ddpm", NET, SIZE, prior.state_dict(), None, {})
    torch.manual_seed(1)
    model = build_model("dirac", NET, SIZE)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_weights(tmp / "dirac.pt", "dirac", NET, SIZE, model.state_dict(), None, {})
    return tmp


def _inputs(tmp: Path, method: str) -> list[str]:
    if method in ("dps", "ddrm"):
        return ["--input", f"prior={tmp / 'prior.pt'}"]
    if method.startswith("dirac"):
        return ["--input", f"model-dt1={tmp / 'dirac.pt'}", "--input", f"schedule={tmp / 'schedule.csv'}"]
    return []


def _args(tmp: Path, method: str, settings: dict | None = None) -> list[str]:
    s = {"seed": 0, "max_images": None, **(settings or SETTINGS[method])}
    return ["--method", method, "--settings", json.dumps(s), "--operator", str(tmp / "operator.json"), "--measurements", str(tmp / "test.npz"), "--threads", "1", "--device", "cpu", *_inputs(tmp, method)]


def _plain(tmp: Path, method: str, out: Path) -> None:
    extra = ["--extra-out", f"posterior_samples={out / 'post.npz'}"] if method.startswith("dirac") else []
    sample_cli.main(_args(tmp, method) + ["--out", str(out / "test.npz"), "--trajectory", str(out / "trajectory.csv"), *extra])


def _members(path: Path, skip: tuple[str, ...] = ("seconds.npy",)) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n not in skip}


def _assert_same_outputs(a: Path, b: Path, method: str) -> None:
    assert _members(a / "test.npz") == _members(b / "test.npz")
    assert (a / "trajectory.csv").read_bytes() == (b / "trajectory.csv").read_bytes()
    if method.startswith("dirac"):
        assert _members(a / "post.npz", ()) == _members(b / "post.npz", ())


@pytest.mark.parametrize("method", list(SETTINGS))
def test_sharded_and_gathered_equals_unsharded_bit_for_bit(files, tmp_path, method):
    _plain(files, method, tmp_path / "plain")
    plain = np.load(tmp_path / "plain" / "test.npz")
    assert plain["x_hat"].shape == (N, 3, SIZE, SIZE) and list(plain["names"]) == [f"img{i}" for i in range(N)]
    assert not list((tmp_path / "plain").glob(".*.partial")), "the partial folder is removed after success"
    # The batch-by-batch run equals one whole-split call of the method (today's results unchanged).
    problem, recorder = load_problem_and_recorder(files / "operator.json", files / "test.npz", "test", torch.device("cpu"))
    ctx = RunContext(torch.device("cpu"), 1, 0, {k: Path(v) for k, v in (a.split("=", 1) for a in _inputs(files, method)[1::2])}, recorder=recorder)
    whole = load_method(method).reconstruct(problem, SETTINGS[method]["hparams"], ctx)
    assert np.array_equal(whole.x_hat, plain["x_hat"])
    if whole.trajectory is not None:
        expect = whole.trajectory.to_csv(index=False)
        assert expect == (tmp_path / "plain" / "trajectory.csv").read_text()
    for n_shards in (2, 3, 4):  # 4 shards of 3 batches: one shard is empty
        shard_dir = tmp_path / f"shards{n_shards}"
        paths = []
        for k in range(n_shards):
            path = shard_dir / f"test-{k}-of-{n_shards}.npz"
            sample_cli.main(_args(files, method) + ["--out", str(path), "--shard", f"{k}/{n_shards}"])
            paths.append(str(path))
        extra = ["--extra-out", f"posterior_samples={shard_dir / 'post.npz'}"] if method.startswith("dirac") else []
        gather_cli.main(["--shards", *reversed(paths), "--out", str(shard_dir / "test.npz"), "--trajectory", str(shard_dir / "trajectory.csv"), *extra])
        _assert_same_outputs(tmp_path / "plain", shard_dir, method)


def test_shards_are_whole_batches_and_gather_refuses_gaps(files, tmp_path):
    plan = batch_plan("dps", 5, 2)
    assert [(b.start, b.stop) for b in plan] == [(0, 2), (2, 4), (4, 5)]
    scico = batch_plan("admm-tv", 7, 3)  # equal chunks of ceil(7 / 3) = 3, the last padded to 3
    assert [(b.start, b.stop, b.size) for b in scico] == [(0, 3, 3), (3, 6, 3), (6, 7, 3)]
    assert [(b.start, b.stop) for b in shard_batches(plan, (1, 2))] == [(4, 5)]
    assert [(b.start, b.stop) for b in shard_batches(plan, images="2:5")] == [(2, 4), (4, 5)]
    with pytest.raises(UserError, match="batch"):
        shard_batches(plan, images="1:4")
    with pytest.raises(UserError, match="K/N"):
        sample_cli.main(_args(files, "admm-tv") + ["--out", str(tmp_path / "s.npz"), "--shard", "3/3"])
    for k in (0, 2):
        sample_cli.main(_args(files, "admm-tv") + ["--out", str(tmp_path / f"s{k}.npz"), "--shard", f"{k}/3"])
    with pytest.raises(UserError, match="missing"):
        gather_cli.main(["--shards", str(tmp_path / "s0.npz"), str(tmp_path / "s2.npz"), "--out", str(tmp_path / "t.npz"), "--trajectory", str(tmp_path / "t.csv")])
    assert not (tmp_path / "t.npz").exists()


def test_a_shard_killed_mid_way_resumes_from_its_finished_batches(files, tmp_path):
    """SIGKILL after the first batch's piece appears; the rerun reuses it and ends identical."""
    settings = {"hparams": {**SETTINGS["dps"]["hparams"], "steps": 40, "batch_size": 1}}
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "diracbench.sample", *_args(files, "dps", settings), "--shard", "0/1"]
    ref = tmp_path / "ref.npz"
    sample_cli.main(_args(files, "dps", settings) + ["--shard", "0/1", "--out", str(ref)])
    out = tmp_path / "killed.npz"
    partial = tmp_path / ".killed.npz.partial"
    proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not list(partial.glob("batch-*.npz")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in partial.glob("batch-*.npz"))
    assert not out.exists() and 1 <= len(done) < N, done
    rerun = subprocess.run(cmd + ["--out", str(out)], check=True, env=env, capture_output=True, text=True, timeout=300)
    assert f"{len(done)} finished batches reused" in rerun.stdout
    assert _members(out) == _members(ref) and not partial.exists()


def test_finished_batches_of_other_settings_are_not_reused(files, tmp_path):
    out = tmp_path / "s.npz"
    partial = tmp_path / ".s.npz.partial"
    sample_cli.main(_args(files, "admm-tv") + ["--out", str(out), "--shard", "0/1", "--partial", str(partial)])
    # Plant a finished batch of another run: a changed setting must not pick it up.
    partial.mkdir()
    (partial / "key.txt").write_text("another run\n")
    np.savez(partial / "batch-000000.npz", x_hat=np.zeros((2, 3, SIZE, SIZE), np.float32))
    sample_cli.main(_args(files, "admm-tv", {"hparams": {**SETTINGS["admm-tv"]["hparams"], "lam": 0.05}}) + ["--out", str(out), "--shard", "0/1", "--partial", str(partial)])
    assert np.load(out)["x_hat"].std() > 0 and not partial.exists()
