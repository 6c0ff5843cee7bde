"""`bench recipe`: val curves of a training recipe, scored without disturbing the training itself."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from diracbench.bench.__main__ import main as bench_main
from diracbench.dirac.loss import make_loss
from diracbench.errors import UserError
from diracbench.nn.models import build_model
from diracbench.training.loop import TrainSettings, train

from test_dirac_train import SETTINGS, _inputs

RECIPE = {**SETTINGS, "label": "tiny", "training": {**SETTINGS["training"], "steps": 6, "lr_warmup_steps": 2, "lr_decay": "cosine", "cpu_bf16": True}}


def _val(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((3, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "val.npz", x=x, y=np.clip(x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), 0, 1), seeds=np.arange(3))
    return tmp_path / "val.npz"


def _train(inputs, after_step=None, state=None):
    tset = TrainSettings.from_dict(RECIPE["training"])
    torch.manual_seed(tset.seed)
    model = build_model("dirac", RECIPE["network"], 16)
    loss = make_loss(RECIPE["loss"], {"operator": inputs["operator"], "schedule": inputs["schedule"]}, torch.device("cpu"))
    return train(model, loss, np.load(inputs["data"]), tset, state, torch.device("cpu"), after_step=after_step)


def test_scoring_after_each_step_leaves_the_training_bit_identical(tmp_path):
    inputs = _inputs(tmp_path)
    plain = _train(inputs, state=tmp_path / "a")
    from diracbench.bench.recipe import one_shot_psnr

    val = np.load(_val(tmp_path))
    x, y = torch.from_numpy(val["x"]), torch.from_numpy(val["y"])
    scores = []
    watched = _train(inputs, after_step=lambda step, m: scores.append((step, one_shot_psnr(m, x, y, 0.05), m.training)), state=tmp_path / "b")
    for key, value in plain.state_dict.items():
        assert torch.equal(value, watched.state_dict[key]), key
    assert [s for s, _, _ in scores] == list(range(1, 7)) and all(mode for _, _, mode in scores)
    assert all(np.isfinite(p) for _, p, _ in scores)


def test_cli_writes_the_curve(tmp_path):
    inputs = _inputs(tmp_path)
    out = tmp_path / "curve.csv"
    def args(measurements):
        return ["recipe", "--settings", json.dumps(RECIPE), "--data", str(inputs["data"]), "--input", f"operator={inputs['operator']}", "--input", f"schedule={inputs['schedule']}", "--measurements", str(measurements), "--every", "4", "--out", str(out), "--device", "cpu"]

    bench_main(args(_val(tmp_path)))
    curve = pd.read_csv(out)
    assert list(curve["step"]) == [4, 6] and list(curve["images_seen"]) == [16, 24]
    assert curve["val_psnr_one_shot"].between(5, 60).all() and (curve["val_images"] == 3).all()
    test_npz = tmp_path / "test.npz"
    test_npz.write_bytes(_val(tmp_path).read_bytes())
    with pytest.raises(UserError, match="val split only"):
        bench_main(args(test_npz))
