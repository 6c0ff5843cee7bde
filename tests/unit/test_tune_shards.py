"""Sharded grid tuning: shards gathered choose the same point and write the same grid.csv/chosen.yaml.

DPS runs its whole grid as one batched job whose batches mix grid points (3 points x 3 images in
batches of 2), DDRM reconstructs each point on its own; both go through the real CLI, in-process.
`seconds_per_image` is wall-clock time and the only column not compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diracbench import cli
from diracbench import tune as tune_cli
from diracbench.methods import load_method
from diracbench.nn.models import build_model, save_weights
from diracbench.operators import GeometricNoise, family_from_config, operator_spec
from diracbench.tune_shards import grid_units

pytestmark = pytest.mark.usefixtures("one_thread")

NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
PRIOR = {"format": "diracbench", "beta_start": 1e-4, "beta_end": 2e-2, "num_timesteps": 1000}
LPIPS = {"net": "vgg", "upsample_below": 64}
N, SIZE = 3, 16
SETTINGS = {
    "dps": {"hparams": {"steps": 4, "variance": "fixedsmall", "clip_x0": True, "batch_size": 2, "prior": PRIOR}, "grid": {"scale": [0.1, 0.5, 2.0]}, "objective": "lpips"},
    "ddrm": {"hparams": {"steps": 3, "eta": 0.85, "eta_b": 1.0, "mask_threshold": 0.01, "batch_size": 2, "prior": PRIOR}, "grid": {"blur_threshold": [0.01, 0.3]}, "objective": "fd_vgg"},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    fam = family_from_config({"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 2.0}, SIZE)
    (tmp / "operator.json").write_text(json.dumps(operator_spec(fam, GeometricNoise(0.01, 0.05), "deblur")))
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(N, 3, 4, 4, generator=g), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    y = fam.apply(x, 1.0) + 0.05 * torch.randn(x.shape, generator=g)
    np.savez(tmp / "val.npz", x=x.numpy(), y=y.numpy(), names=np.array([f"v{i}" for i in range(N)]), seeds=np.arange(N))
    torch.manual_seed(0)
    save_weights(tmp / "prior.pt", "ddpm", NET, SIZE, build_model("ddpm", NET, SIZE).state_dict(), None, {})
    return tmp


def _args(tmp: Path, method: str) -> list[str]:
    s = {"seed": 0, "max_images": None, "lpips": LPIPS, **SETTINGS[method]}
    return ["--method", method, "--settings", json.dumps(s), "--operator", str(tmp / "operator.json"), "--measurements", str(tmp / "val.npz"), "--threads", "1", "--device", "cpu", "--input", f"prior={tmp / 'prior.pt'}"]


def _outputs(folder: Path) -> tuple[bytes, str]:
    grid = pd.read_csv(folder / "grid.csv").drop(columns=["seconds_per_image"])
    return (folder / "chosen.yaml").read_bytes(), grid.to_csv(index=False)


@pytest.mark.parametrize("method", list(SETTINGS))
def test_sharded_tuning_chooses_and_writes_what_the_unsharded_one_does(files: Path, tmp_path: Path, method: str) -> None:
    plain = tmp_path / "plain"
    tune_cli.main(_args(files, method) + ["--out-chosen", str(plain / "chosen.yaml"), "--out-grid", str(plain / "grid.csv")])
    grid = pd.read_csv(plain / "grid.csv")
    assert len(grid) == len(next(iter(SETTINGS[method]["grid"].values()))) and grid["chosen"].sum() == 1
    assert grid["lpips"].nunique() == len(grid)  # the points differ, so a mixed-up gather would show
    units = grid_units(load_method(method), method, N, [{**SETTINGS[method]["hparams"], k: v} for k, vs in SETTINGS[method]["grid"].items() for v in vs])
    if method == "dps":  # 9 (point, image) entries in batches of 2: batches straddle grid points
        assert [len(u.entries) for u in units] == [2, 2, 2, 2, 1] and units[1].entries == ((0, 2), (1, 0))
    else:  # per point: images 0:2 and 2:3
        assert [u.entries for u in units][:2] == [((0, 0), (0, 1)), ((0, 2),)]
    for n in (2, 6):  # 6 shards of 5 (dps) / 4 (ddrm) batches: some are empty
        files_n = [tmp_path / f"s{n}" / f"{k}-of-{n}.npz" for k in range(n)]
        for k, f in enumerate(files_n):
            tune_cli.main(_args(files, method) + ["--shard", f"{k}/{n}", "--out-shard", str(f)])
        out = tmp_path / f"gathered{n}"
        tune_cli.main(_args(files, method) + ["--shards", *map(str, files_n), "--out-chosen", str(out / "chosen.yaml"), "--out-grid", str(out / "grid.csv")])
        assert _outputs(out) == _outputs(plain), f"{n} shards"
    with pytest.raises(SystemExit) as exit_:  # a missing shard: one line, nothing written
        cli.run(tune_cli.main, _args(files, method) + ["--shards", str(files_n[0]), str(files_n[2]), "--out-chosen", str(tmp_path / "bad" / "c.yaml"), "--out-grid", str(tmp_path / "bad" / "g.csv")], stage="diracbench.tune")
    assert exit_.value.code == 2 and not (tmp_path / "bad").exists()
