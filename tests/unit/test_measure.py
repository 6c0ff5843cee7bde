"""Measurements: made once, per-image seeded, exactly y = A_1 x + sigma_1 z."""

from __future__ import annotations

import json

import numpy as np
import torch

from diracbench.data.__main__ import main as data_main
from diracbench.io import read_npz
from diracbench.measure import main as measure_main
from diracbench.measure import noise_seeds
from diracbench.operators import family_from_spec, load_operator_spec
from diracbench.seeding import image_generators, randn_per_image

from test_data import PHOTOS

BLUR = {"kind": "blur", "kernel_size": 9, "std_min": 0.3, "std_max": 1.5}


def measure(tmp_path, operator=BLUR, name="m"):
    data = tmp_path / "data"
    if not data.exists():
        data_main(["--settings", json.dumps(PHOTOS), "--out-dir", str(data)])
    settings = {"dataset": "photos", "task": "deblur" if operator["kind"] == "blur" else "inpaint", "seed": 0, "image_size": 16, "operator": operator, "noise": {"sigma_min": 0.01, "sigma_max": 0.05}}
    measure_main(["--settings", json.dumps(settings), "--data-dir", str(data), "--out-dir", str(tmp_path / name)])
    return tmp_path / name


def test_measurement_is_operator_plus_seeded_noise(tmp_path):
    out = measure(tmp_path)
    spec = load_operator_spec(out / "operator.json")
    assert spec["sigma_1"] == 0.05 and spec["family"]["std_t1"] == 1.5
    m = read_npz(out / "measurements" / "test.npz", required=("x", "y", "names", "seeds"))
    assert m["x"].dtype == np.float32 and m["y"].dtype == np.float32 and m["x"].shape == m["y"].shape == (8, 3, 16, 16)
    x = torch.from_numpy(m["x"])
    clean = family_from_spec(spec).measurement_operator().forward(x)
    z = randn_per_image(x.shape, image_generators(m["seeds"].tolist()))
    assert torch.allclose(torch.from_numpy(m["y"]), clean + 0.05 * z, atol=1e-6)
    residual = (torch.from_numpy(m["y"]) - clean).std()
    assert 0.045 < float(residual) < 0.055


def test_noise_depends_on_image_name_not_on_position():
    a = noise_seeds(0, "photos", "deblur", "test", ["u", "v", "w"])
    b = noise_seeds(0, "photos", "deblur", "test", ["w", "u"])
    assert a[0] == b[1] and a[2] == b[0]
    assert len(set(a.tolist())) == 3
    assert noise_seeds(1, "photos", "deblur", "test", ["u"])[0] != a[0]
    assert noise_seeds(0, "photos", "inpaint", "test", ["u"])[0] != a[0]


def test_rerun_gives_identical_measurements(tmp_path):
    first = read_npz(measure(tmp_path, name="a") / "measurements" / "val.npz")
    second = read_npz(measure(tmp_path, name="b") / "measurements" / "val.npz")
    assert np.array_equal(first["y"], second["y"])
