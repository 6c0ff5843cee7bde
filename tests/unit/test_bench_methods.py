"""Cost-at-quality runs (hook-counted network passes, per-method subprocess) and the batching bench."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from diracbench.bench import batching as bench_batching
from diracbench.bench import methods as bench_methods
from diracbench.bench.__main__ import main as bench_main
from diracbench.bench.counters import NetworkCounter
from diracbench.nn.models import build_model
from test_dirac_method import RUN, TINY_NET, VARIANT, setup  # noqa: F401  (fixture)


def test_counter_counts_outermost_calls_and_backward_passes():
    model = build_model("dirac", TINY_NET, 16)
    y = torch.rand(3, 3, 16, 16)
    sigma = torch.full((3,), 0.03)
    with NetworkCounter() as counter:
        with torch.no_grad():
            model(y, sigma)
            model(y[:2], sigma[:2])
        x = y.clone().requires_grad_(True)
        out = model(x, sigma)
        torch.autograd.grad(out.sum(), x)
    assert (counter.forward_calls, counter.forward_images) == (3, 8)  # sub-layers are not counted
    assert (counter.backward_calls, counter.backward_images) == (1, 3)
    assert counter.summary()["networks"] == "DiracDenoiser"
    model(y, sigma)  # outside the context: hooks are gone
    assert counter.forward_calls == 3


def _spec(tmp, inputs, variant_overrides=None):
    (tmp / "chosen.yaml").write_text(yaml.safe_dump({"po": {"t_stop": 0.5}, "do": {"t_stop": 0.5}}))
    # The tuning's grid.csv beside it: the sample path checks chosen values against it.
    (tmp / "grid.csv").write_text("variant,t,chosen\npo,1.0,False\npo,0.5,True\ndo,1.0,False\ndo,0.5,True\n")
    hparams = {**VARIANT, **RUN, "variant": "po", "lpips_every": 2, **(variant_overrides or {})}
    return {
        "method": "dirac-po", "settings": {"max_images": None, "seed": 0, "hparams": hparams},
        "operator": str(tmp / "operator.json"), "measurements": str(tmp / "test.npz"), "tuned": f"{tmp / 'chosen.yaml'}:po",
        "inputs": {k: str(v) for k, v in inputs.items()}, "max_images": 4,
    }


@pytest.mark.parametrize(("overrides", "backward"), [({}, 0), ({"guidance": "std", "zeta": 0.5}, 2)], ids=["plain", "guided"])
def test_method_run_counts_the_sampler_network_passes(setup, overrides, backward):  # noqa: F811
    tmp, inputs = setup
    result = bench_methods.run_one(_spec(tmp, inputs, overrides), torch.device("cpu"), threads=1)
    # dt 0.25 stopped at t = 0.5: three network evaluations; guidance differentiates all but the last.
    assert result["nfe"] == 3 and result["forward_per_image"] == 3 and result["backward_per_image"] == backward
    assert result["n_images"] == 4 and result["batch_size"] == 3 and result["networks"] == "DiracDenoiser"
    assert result["peak_rss_mb"] >= result["start_rss_mb"] > 0 and np.isfinite(result["bench_psnr"])


def test_methods_command_runs_each_method_in_a_subprocess_and_joins_quality(setup):  # noqa: F811
    tmp, inputs = setup
    spec = _spec(tmp, inputs)
    pd.DataFrame({"metric": ["psnr", "lpips", "seconds"], "mean": [21.5, 0.3, 0.02], "n": [5, 5, 5]}).to_csv(tmp / "aggregate.csv", index=False)
    pd.DataFrame({"name": ["a", "b"], "psnr": [20.0, 22.0], "lpips": [0.2, 0.4]}).to_csv(tmp / "per_image.csv", index=False)
    settings = {"max_images": 2, "jobs": [{"dataset": "toy", "task": "inpaint", "method": "dirac-po", "settings": spec["settings"], "tuned_key": "po"}]}
    args = ["methods", "--settings", json.dumps(settings), "--out", str(tmp / "bench" / "methods.csv")]
    for name, path in {"operator": tmp / "operator.json", "measurements": tmp / "test.npz", "tuned": tmp / "chosen.yaml", "aggregate": tmp / "aggregate.csv", "per_image": tmp / "per_image.csv", **inputs}.items():
        args += ["--input", f"toy:inpaint:dirac-po:{name}={path}"]
    bench_main(args)
    table = pd.read_csv(tmp / "bench" / "methods.csv")
    assert list(table.columns) == bench_methods.COLUMNS and len(table) == 1
    row = table.iloc[0]
    assert (row["method"], row["n_images"], row["nfe"], row["forward_per_image"]) == ("dirac-po", 2, 3, 3)
    assert (row["psnr"], row["lpips"], row["quality_n"]) == (21.5, 0.3, 5)
    assert (row["paired_psnr"], row["paired_lpips"], row["paired_n"]) == pytest.approx((21.0, 0.3, 2))  # one method: all its images
    assert (tmp / "bench" / "methods.provenance.json").is_file()


def test_paired_quality_averages_over_the_images_every_method_scored(tmp_path):
    full = pd.DataFrame({"name": [f"img{i}" for i in range(6)], "psnr": [20.0, 21, 22, 23, 24, 25], "lpips": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    full.to_csv(tmp_path / "full.csv", index=False)
    full.iloc[[4, 1]].to_csv(tmp_path / "subset.csv", index=False)  # a DPS-like subset, in another order
    paired = bench_methods.paired_quality({"dirac-po": tmp_path / "full.csv", "dps": tmp_path / "subset.csv"})
    assert paired["dirac-po"] == pytest.approx({"paired_psnr": 22.5, "paired_lpips": 0.35, "paired_n": 2})
    assert paired["dps"] == paired["dirac-po"]  # same images, same values
    with pytest.raises(bench_methods.UserError, match="snakemake --cores all"):
        bench_methods.paired_quality({"dps": tmp_path / "missing.csv"})


def test_batching_command_compares_like_with_like(setup):  # noqa: F811
    tmp, inputs = setup
    np.save(tmp / "train.npy", (np.random.default_rng(0).random((6, 3, 16, 16)) * 255).astype(np.uint8))
    sampler = {**VARIANT, "estimator": "look_back", "guidance": "error", "zeta": 0.5, "output": "iterate"}
    settings = {"steps": 3, "batch_sizes": [1, 3], "loop_images": 2, "repeats": 1, "seed": 0,
                "tasks": {"toy:inpaint": {"sampler": sampler, "loss": {"dt": 0.0, "clean_space_at_tau0": False}, "loss_batch_size": 4}}}
    files = {"operator": tmp / "operator.json", "schedule": inputs["schedule"], "model": inputs["model-dt0"], "measurements": tmp / "test.npz", "train": tmp / "train.npy"}
    out = tmp / "bench" / "batching.csv"
    bench_main(["batching", "--settings", json.dumps(settings), "--out", str(out), *[a for k, v in files.items() for a in ("--input", f"toy:inpaint:{k}={v}")]])
    table = pd.read_csv(out)
    assert list(table.columns) == bench_batching.COLUMNS
    samp = table[table["measure"] == "sampling"]
    assert sorted(samp["batch_size"]) == [1, 1, 3] and set(samp["nfe"]) == {3}
    assert samp[samp["implementation"] == "official_loop"]["difference"].iloc[0] < 1e-4
    loss = table[table["measure"] == "loss_step"].set_index("implementation")
    assert loss.loc["batched", "difference"] < 1e-4
    ops = table[table["measure"] == "loss_operators"].set_index("implementation")
    assert ops.loc["batched", "difference"] < 1e-5
    np.testing.assert_allclose(table["images_per_s"], table["images"] / table["median_s"])
