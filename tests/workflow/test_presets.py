"""The paper presets validate and plan the full DAG, with tiny fake dataset folders and checkpoints."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import yaml
from PIL import Image

from smk import REPO, job_counts, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

PRESETS = sorted((REPO / "workflow" / "presets").glob("*.yaml"))


def fake_images(folder, n, size=260):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 10 * i % 255, np.uint8)).save(folder / f"{i:05d}.png")


def lay_out_fake_inputs(preset: dict, workdir) -> None:
    """Tiny folders in the layout each split's protocol expects, and empty checkpoint files."""
    for ds in preset["datasets"].values():
        for split in ("train", "val", "test"):
            spec = ds["source"][split]
            root = workdir / spec["root"]
            if spec["protocol"] == "ffhq":
                for sub in spec["subfolders"]:
                    fake_images(root / sub, 3)
            elif spec["protocol"] == "imagenet":
                for cls in ("n01440764", "n01443537"):
                    fake_images(root / cls, 16)  # 32 training images: the presets' batch size
            else:
                fake_images(root, 40)  # celeba_hq's 80 % train part holds the batch of 32
    for entry in preset["prior"]["pretrained"].values():
        (workdir / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        (workdir / entry["path"]).write_bytes(b"")  # a dry run checks presence, not content


@pytest.mark.parametrize("preset_path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_plans_the_full_dag_with_gpus_for_training(preset_path, tmp_path):
    preset = yaml.safe_load(preset_path.read_text())
    lay_out_fake_inputs(preset, tmp_path)
    proc = snakemake("-n", "-p", config=preset_path, workdir=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    n_tasks = len(preset["tasks"])
    models = sum(len(preset["dirac"]["tasks"][t]["look_aheads"]) for t in preset["tasks"])
    assert counts.get("train_dirac") == models
    assert "train_prior" not in counts  # the presets load the published priors
    for rule in ("prepare_data", "measure", "schedule", "tune_dirac"):
        assert counts.get(rule) == (1 if rule == "prepare_data" else n_tasks), (rule, counts)
    jobs = planned_jobs(out)
    # Sampling runs in shards the planner sizes to the walltime: DPS (hours per task) in several,
    # each shard on its own images, all joined by one gather job per method and task.
    shards = {}
    for rule, wc in jobs:
        if rule.startswith("sample_"):
            method = f"dirac-{wc['variant']}" if rule == "sample_dirac" else wc["method"]
            shards.setdefault((method, wc["task"]), set()).add((int(wc["shard"]), int(wc["shards"])))
    assert set(shards) == {(m, t) for m in preset["methods"] for t in preset["tasks"]}, sorted(shards)
    for (method, task), found in shards.items():
        (n,) = {total for _, total in found}  # one shard count per method and task ...
        assert found == {(k, n) for k in range(n)}, (method, task, sorted(found))  # ... and every shard
    assert all(len(shards[("dps", t)]) > 1 for t in preset["tasks"]), {k: len(v) for k, v in shards.items()}
    gathers = Counter(rule for rule, _ in jobs if rule.startswith("gather_"))
    assert gathers == {"gather_dirac": 2 * n_tasks, "gather_method": 4 * n_tasks}, gathers
    for env, env_methods in (("torch", ("dps", "ddrm")), ("scico", ("pnp-admm", "admm-tv"))):
        planned = sorted(wc["method"] for rule, wc in jobs if rule == f"tune_method_{env}")
        assert planned == sorted(m for m in env_methods for _ in range(n_tasks)), (env, planned)
    # Planned resources: every sampling shard asks for the planner's walltime and at least its
    # host memory, and the planner's figures grow with images x NFE.
    from diracbench import plan as planner

    plan_jobs = {j.name: j for j in planner.plan({**preset, "methods": preset["methods"]}, strict=False)}
    resources = {}
    for block in re.split(r"\n(?=(?:local)?rule )", out):
        head = re.match(r"rule (\w+):", block)
        wc = re.search(r"wildcards: (.*)", block)
        res = re.search(r"resources: (.*)", block)
        if head and wc and res and head.group(1) in ("sample_method_torch", "sample_dirac"):
            w = dict(p.strip().split("=", 1) for p in wc.group(1).split(","))
            method = w.get("method") or f"dirac-{w['variant']}"
            resources[(method, w["task"])] = {k: int(re.search(rf"\b{k}=(\d+)", res.group(1)).group(1)) for k in ("runtime", "mem_mb")}
    for (method, task), got in resources.items():
        job = plan_jobs[f"sample_{method}[{next(iter(preset['datasets']))}/{task}]"]
        assert got["runtime"] == max(-(-job.walltime_min // 1), 10) and got["mem_mb"] >= job.host_mem_mb, (method, task, got, job)  # 10: RUNTIME_FLOOR_MIN
    ds = next(iter(preset["datasets"]))
    for task in preset["tasks"]:
        dps, ddrm = plan_jobs[f"sample_dps[{ds}/{task}]"], plan_jobs[f"sample_ddrm[{ds}/{task}]"]
        assert dps.images * dps.nfe_per_image > ddrm.images * ddrm.nfe_per_image and dps.hours > ddrm.hours
        assert dps.shards > 1 and dps.walltime_min * dps.shards > ddrm.walltime_min * ddrm.shards
    assert counts.get("metrics") == n_tasks * (len(preset["methods"]) + 1)  # + the measurement row
    assert counts.get("tables") == 1
    # Training asks Slurm/Snakemake for one GPU per data-parallel process and launches them
    # with torchrun: the dry run shows both on every such job.
    procs = preset["training"]["execution"]["processes"]
    assert procs > 1
    blocks = re.split(r"\n(?=(?:local)?rule )", out)
    train_blocks = [b for b in blocks if b.startswith("rule train_dirac:")]
    assert train_blocks and all(re.search(rf"resources:.*\bgpu={procs}\b", b) for b in train_blocks)
    assert all(f"launch='torchrun --standalone --nproc_per_node {procs}'" in b for b in train_blocks)
    assert {r for r, _ in planned_jobs(out)} >= {"train_dirac", "sample_method_torch", "figure", "all"}


def test_preset_without_its_checkpoint_fails_naming_it(tmp_path):
    preset_path = REPO / "workflow" / "presets" / "paper-ffhq.yaml"
    preset = yaml.safe_load(preset_path.read_text())
    lay_out_fake_inputs(preset, tmp_path)
    (tmp_path / preset["prior"]["pretrained"]["ffhq"]["path"]).unlink()
    proc = snakemake("-n", config=preset_path, workdir=tmp_path, check=False, timeout=300)
    assert proc.returncode != 0
    assert "prior.pretrained.ffhq.path" in proc.stdout + proc.stderr
