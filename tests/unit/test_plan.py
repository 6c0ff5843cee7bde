"""The resource planner: its counts against independent ones, its memory against a measured peak,
its arithmetic on the presets, and the walltime error."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from diracbench import plan as planner
from diracbench.plan import PlanError
from diracbench.plan.__main__ import main as plan_main
from diracbench.plan.count import count_network
from diracbench.plan.meta import build_network

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
SMALL = {"kind": "dirac", "network": {"model_channels": 32, "channel_mult": [1, 2, 2], "num_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}, "image_size": 32}


def _config(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_dncnn_flops_equal_the_hand_count():
    spec = {"kind": "dncnn", "layers": 5, "width": 8, "image_size": 16}
    hw, w = 16 * 16, 8
    per_plane = 2 * hw * (1 * 9 * w + 3 * (w * 9 * w) + w * 9 * 1)  # 2 FLOPs per multiply-add
    got = count_network(spec, ("infer",))
    assert got["infer"]["flops"] == 3 * per_plane  # one plane per colour channel
    assert got["params"] == (9 * w + w) + 3 * (9 * w * w + 2 * w) + (9 * w + 1)


def test_unet_flops_equal_a_count_from_layer_shapes():
    """Independent of FlopCounterMode: module hooks see each conv/linear's shapes on real tensors,
    and the bottleneck attention's two L x L matmuls are added by formula."""
    net = {"model_channels": 8, "channel_mult": [1], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    spec = {"kind": "dirac", "network": net, "image_size": 8}
    from diracbench.nn.models import build_model

    def hand_count(batch: int) -> int:
        model = build_model("dirac", net, 8)
        total = [0]

        def hook(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            elif isinstance(mod, nn.Linear):
                total[0] += 2 * out.numel() * mod.in_features

        for m in model.modules():
            m.register_forward_hook(hook)
        with torch.no_grad():
            model(torch.zeros(batch, 3, 8, 8), torch.ones(batch))
        attention_layers = sum(1 for m in model.modules() if getattr(m, "attention", False))
        L, C = 8 * 8, 8
        return total[0] + attention_layers * batch * 2 * (2 * L * L * C)

    expect = hand_count(2) - hand_count(1)
    assert count_network(spec, ("infer",))["infer"]["flops"] == expect


_MEASURE = r"""
import sys, torch
torch.set_num_threads(1)
from diracbench.plan.meta import build_network
spec = {"kind": "dirac", "network": %r, "image_size": 32}
batch = int(sys.argv[1])
torch.manual_seed(0)
with torch.device("cpu"):
    from diracbench.nn.models import build_model
    model = build_model("dirac", spec["network"], 32)
x, s = torch.randn(batch, 3, 32, 32), torch.ones(batch)
model(x[:1], s[:1]).sum().backward()  # warm-up: one-off allocations happen before the measurement
for p in model.parameters():
    p.grad = None
base = int(open("/proc/self/statm").read().split()[1]) * 4096
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
model(x, s).sum().backward()
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(int(hwm) * 1024 - base)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_activation_memory_is_within_25_percent_of_the_measured_peak():
    """Measured: the peak RSS increase of a real CPU training step (forward + backward) in a fresh
    process, per image from the difference of batches 16 and 8. glibc is told to serve every block
    above 64 KiB by mmap and to return it at once, so freed tensors leave the RSS immediately and
    the peak is the tensors' peak, not the allocator's history."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    code = _MEASURE % (SMALL["network"],)
    peaks = {b: int(subprocess.run([sys.executable, "-c", code, str(b)], env=env, capture_output=True, text=True, check=True, timeout=300).stdout) for b in (8, 16)}
    measured = (peaks[16] - peaks[8]) / 8
    planned = count_network(SMALL, ("train",))["train"]
    assert 0.75 * measured <= planned["saved_bytes"] <= 1.25 * measured, (planned, measured)
    assert 0.75 * measured <= planned["peak_bytes"] <= 1.25 * measured, (planned, measured)


def test_bf16_autocast_shrinks_only_the_convolution_inputs():
    fp32 = count_network(SMALL, ("train",), bf16=False)["train"]["saved_bytes"]
    bf16 = count_network(SMALL, ("train",), bf16=True)["train"]["saved_bytes"]
    # Convolution inputs are saved in bf16; GroupNorm/SiLU inputs stay fp32 under CUDA autocast.
    assert 0.5 * fp32 < bf16 < 0.95 * fp32


def test_meta_build_matches_the_published_parameter_counts():
    from diracbench.prior.pretrained import PRETRAINED_FORMATS

    model = build_network({"kind": "pretrained", "format": "sdedit", "image_size": 256})
    assert sum(p.numel() for p in model.parameters()) == PRETRAINED_FORMATS["sdedit"].parameters
    assert next(model.parameters()).device.type == "meta"


def _fake_counter(spec, modes, bf16):
    """1 TFLOP and 1 GiB per image for every network and mode: the arithmetic alone."""
    figures = {"flops_fwd": 1e12, "flops": 1e12, "saved_bytes": 2**30, "peak_bytes": 2**30, "fixed_bytes": 0}
    return {"params": 1_000_000, **{m: dict(figures) for m in modes}}


def _light_counter(spec, modes, bf16):
    return {"params": 1_000_000, **{m: {"flops_fwd": 1e9, "flops": 1e9, "saved_bytes": 2**30, "peak_bytes": 2**30, "fixed_bytes": 0} for m in modes}}


def test_preset_plans_scale_with_images_and_nfe_and_shard_dps():
    cfg = _config("workflow/presets/paper-ffhq.yaml")
    jobs = {j.name: j for j in planner.plan(cfg, counter=_fake_counter, strict=False)}
    dps = jobs["sample_dps[ffhq/deblur]"]
    assert dps.images == 1000 and dps.nfe_per_image == 1000 and dps.tflop == pytest.approx(1000 * 1000)
    assert dps.shards == 8  # shard_size 128 images = 16 batches of 8; 125 batches
    assert dps.micro_batch == 8 and dps.device == "gpu"
    more = copy.deepcopy(cfg)
    more["dps"]["hparams"]["steps"] = 2000
    more["dataset_note"] = "changed"  # a different config: no cached plan
    doubled = {j.name: j for j in planner.plan(more, counter=_fake_counter, strict=False)}["sample_dps[ffhq/deblur]"]
    assert doubled.hours == pytest.approx(2 * dps.hours)
    assert jobs["tune_dps[ffhq/deblur]"].images == 8 * 16  # grid points x val images
    assert jobs["sample_dirac-po[ffhq/inpaint]"].nfe_per_image > 200  # dt 0.005 to t_stop 0, + posterior samples
    assert jobs["train_dirac[ffhq/deblur/dt0]"].images == 225000 * 32


def test_data_parallel_training_divides_the_walltime_not_the_device_hours():
    cfg = _config("workflow/presets/paper-ffhq.yaml")
    cfg["cluster"] = {**cfg["cluster"], "max_walltime_min": 10**6}  # no resumes: compare one walltime
    one, four = copy.deepcopy(cfg), copy.deepcopy(cfg)
    one["training"]["execution"] = {**cfg["training"]["execution"], "processes": 1}
    four["training"]["execution"] = {**cfg["training"]["execution"], "processes": 4}
    name = "train_dirac[ffhq/deblur/dt0]"
    a = {j.name: j for j in planner.plan(one, counter=_fake_counter, strict=False)}[name]
    b = {j.name: j for j in planner.plan(four, counter=_fake_counter, strict=False)}[name]
    assert b.hours == pytest.approx(a.hours)  # the same GPU-hours, spread over 4 GPUs
    startup = planner.cluster_settings(cfg)["startup_min"]
    assert b.walltime_min - startup == pytest.approx((a.walltime_min - startup) / 4)
    assert b.micro_batch <= 8 and b.processes == 4  # each GPU holds its quarter of the batch of 32


def test_a_walltime_too_short_for_any_sharding_names_the_setting():
    cfg = _config("workflow/presets/paper-ffhq.yaml")
    cfg["cluster"] = {**cfg["cluster"], "max_walltime_min": 8, "shard_size": {"dps": "auto"}}  # one batch: 3.3 min x 1.5 + 5
    jobs = {j.name: j for j in planner.plan(cfg, counter=_fake_counter, strict=False)}
    assert "lower dps.hparams.batch_size or raise cluster.max_walltime_min" in jobs["sample_dps[ffhq/deblur]"].note
    with pytest.raises(PlanError, match="cluster.max_walltime_min"):
        planner.plan(cfg, counter=_fake_counter)
    # A fixed shard size too large for the walltime names that setting instead.
    cfg["cluster"] = {**cfg["cluster"], "max_walltime_min": 2880, "shard_size": {"dps": 1000}}  # one shard: 7 h x 1.5
    note = {j.name: j for j in planner.plan(cfg, counter=_fake_counter, strict=False)}["sample_dps[ffhq/deblur]"].note
    assert "cluster.shard_size.dps is 1000" not in note
    cfg["cluster"]["max_walltime_min"] = 600
    note = {j.name: j for j in planner.plan(cfg, counter=_fake_counter, strict=False)}["sample_dps[ffhq/deblur]"].note
    assert "cluster.shard_size.dps is 1000" in note


def test_job_threads_set_the_cpu_jobs_threads_and_their_share_of_the_rate():
    """`job_threads` is the thread count of every tuning, sampling and schedule job; on a CPU-only
    cluster a GPU rule's job at 1 thread gets half the 2-thread rate; training jobs follow
    training.execution.threads instead (0: 2 for one process), also at half the rate on one."""
    cfg = _config("config.yaml")
    cfg["methods"] = [m for m in cfg["methods"] if m not in cfg["extended"]["methods"]]  # `all`'s methods
    plans = {}
    for n in (1, 2):
        c = {**copy.deepcopy(cfg), "job_threads": n}
        plans[n] = {j.name: j for j in planner.plan(c, counter=_light_counter, strict=False)}
    one, two = plans[1], plans[2]
    for name in ("schedule[photos/deblur]", "tune_pnp-admm[photos/deblur]", "sample_admm-tv[photos/inpaint]", "tune_dirac[photos/deblur]", "sample_dps[photos/deblur]"):
        assert (one[name].threads, two[name].threads) == (1, 2), name
    for name in ("tune_dirac[photos/deblur]", "sample_dps[photos/inpaint]", "tune_pnp-admm[photos/inpaint]"):
        assert one[name].hours == pytest.approx(2 * two[name].hours), name
    train = "train_dirac[photos/deblur/dt1]"
    assert cfg["training"]["execution"]["threads"] == 1
    assert one[train].threads == two[train].threads == 1 and one[train].hours == pytest.approx(two[train].hours)
    c = copy.deepcopy(cfg)
    c["training"]["execution"]["threads"] = 0
    auto = {j.name: j for j in planner.plan(c, counter=_light_counter, strict=False)}
    assert auto[train].threads == 2 and one[train].hours == pytest.approx(2 * auto[train].hours)
    assert auto["train_prior[photos]"].threads == 2 and one["train_prior[photos]"].threads == 1
    assert one["metrics[photos/deblur/dps]"].threads == two["metrics[photos/deblur/dps]"].threads == 1


def test_resources_and_shards_for_rules(tmp_path):
    cfg = _config("workflow/presets/paper-ffhq.yaml")
    planner._PLANS.clear()
    import diracbench.plan as p

    orig = p._default_counter
    p._default_counter = _light_counter
    try:
        res = planner.resources(cfg, "sample_dps", {"dataset": "ffhq", "task": "deblur"})
        assert res["gpu"] == 1 and res["runtime"] > 0 and res["mem_mb"] > 0
        assert planner.shards(cfg, "dps", "deblur", "ffhq") == 8
        assert planner.resources(cfg, "sample_pnp_admm", {"dataset": "ffhq", "task": "deblur"})["gpu"] == 0
        # One GPU per data-parallel training process; none anywhere on a CPU-only cluster.
        procs = cfg["training"]["execution"]["processes"]
        assert procs > 1 and planner.resources(cfg, "train_dirac", {"dataset": "ffhq", "task": "deblur", "dt": "0"})["gpu"] == procs
        cpu = {**cfg, "cluster": {**cfg["cluster"], "device": "cpu"}}
        assert planner.resources(cpu, "train_dirac", {"dataset": "ffhq", "task": "deblur", "dt": "0"})["gpu"] == 0
        assert planner.resources(cpu, "sample_dps", {"dataset": "ffhq", "task": "deblur"})["gpu"] == 0
        assert planner.metric_shards(cfg, "ffhq", "deblur", "dps") == 1  # 120 min fits 48 h: auto keeps one job
        split = {**cfg, "cluster": {**cfg["cluster"], "shard_size": {**cfg["cluster"]["shard_size"], "metrics": 256}}}
        assert planner.metric_shards(split, "ffhq", "deblur", "dps") == 4  # 1000 images, 8 batches of 32 per shard
        assert planner.metric_shards(split, "ffhq", "deblur", "measurement") == 4
    finally:
        p._default_counter = orig
        planner._PLANS.clear()


def test_cli_writes_the_tidy_csv_and_the_markdown_table(tmp_path):
    plan_main(["--config", str(REPO / "tests/configs/tiny.yaml"), "--out-csv", str(tmp_path / "plan.csv"), "--out-md", str(tmp_path / "plan.md")])
    import pandas as pd

    table = pd.read_csv(tmp_path / "plan.csv")
    assert {"sample_dps", "train_dirac", "metrics", "prepare_data", "schedule", "train_prior"} <= set(table["rule"])
    assert (table.loc[table["rule"] == "sample_dps", "nfe_per_image"] == 10).all()
    md = (tmp_path / "plan.md").read_text()
    assert md.count("| sample_dps[") == 2 and "GPU-hours" in md


def test_cli_fills_method_sections_a_config_leaves_out(tmp_path):
    # config.yaml configures diffpir without a `diffpir:` section (its registry defaults apply),
    # and sr4 in `extended:`: the plan covers them as the workflow does.
    plan_main(["--config", str(REPO / "config.yaml"), "--out-csv", str(tmp_path / "plan.csv")])
    import pandas as pd

    table = pd.read_csv(tmp_path / "plan.csv")
    rows = set(zip(table["rule"], table["task"].fillna(""), table["tag"].fillna("")))
    assert ("metrics", "deblur", "diffpir") in rows and ("sample_dps", "sr4", "") in rows
