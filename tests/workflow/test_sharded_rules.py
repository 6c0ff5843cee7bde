"""Sampling through `{shard}` jobs and a gather step, on the tiny chain's finished results.

DDRM (the torch rule) and ADMM-TV (the scico rule) sample the test split in 2 shards
(`cluster.shard_size`); the gathered files equal a 1-shard run bit for bit, and deleting one shard
file (as a failed shard job leaves it: no gathered files) plans exactly that shard and the gather.
"""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import yaml

from smk import TWO_JOBS_AT_ONCE, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

# method -> (its rule, the batch size that gives the tiny test split's 4 images 2 batches)
SHARDED = {"ddrm": ("sample_method_torch", 2), "admm-tv": ("sample_method_scico", 2)}


def write_config(base, path, shard_size):
    cfg = yaml.safe_load(base.read_text())
    for method, (_, batch) in SHARDED.items():
        cfg[method]["hparams"]["batch_size"] = batch
    cfg["cluster"] = {"shard_size": {m: shard_size for m in SHARDED}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def recon_targets(task):
    return [f"results/photos/{task}/{m}/recon/test.npz" for m in SHARDED]


def read_outputs(root, task):
    out = {}
    for method in SHARDED:
        folder = root / "results" / "photos" / task / method / "recon"
        with np.load(folder / "test.npz") as npz:
            out[method] = {k: npz[k] for k in npz.files if k != "seconds"}  # wall time differs run to run
        out[method]["trajectory"] = (folder / "trajectory.csv").read_bytes()
    return out


def test_two_shards_equal_one_and_a_deleted_shard_reruns_only_itself_and_the_gather(tiny_run, tmp_path):
    source, base_config = tiny_run
    root = tmp_path / "work"
    shutil.copytree(source, root, symlinks=True)
    task = "deblur"
    run = lambda config, *targets, dry=False: snakemake(  # noqa: E731
        *(("-n",) if dry else TWO_JOBS_AT_ONCE), *targets, workdir=root, config=config, snakefile=root / "Snakefile"
    )

    one = write_config(base_config, tmp_path / "one-shard.yaml", None)
    run(one, *recon_targets(task))
    unsharded = read_outputs(root, task)

    two = write_config(base_config, tmp_path / "two-shards.yaml", 2)
    dry = run(two, *recon_targets(task), dry=True)
    jobs = Counter((rule, wc.get("method"), wc.get("shard"), wc.get("shards")) for rule, wc in planned_jobs(dry.stdout))
    # The shard count changed, not a setting: nothing is tuned again, each method samples 2 shards.
    assert jobs == Counter(
        {(rule, m, str(k), "2"): 1 for m, (rule, _) in SHARDED.items() for k in range(2)}
        | {("gather_method", m, None, None): 1 for m in SHARDED}
    ), dry.stdout[-3000:]
    run(two, *recon_targets(task))
    sharded = read_outputs(root, task)
    for method in SHARDED:
        shards = sorted((root / "results" / "photos" / task / method / "recon" / "shards").glob("test-*-of-2.npz"))
        assert len(shards) == 2, shards
        assert unsharded[method].keys() == sharded[method].keys()
        for key, value in unsharded[method].items():
            if key == "trajectory":
                assert sharded[method][key] == value, method
            else:
                np.testing.assert_array_equal(sharded[method][key], value, err_msg=f"{method} {key}")

    # A failed shard: Snakemake removes the failed job's output and the gather never runs. The
    # rerun plans that shard and the gather only; the finished shard is kept.
    recon = root / "results" / "photos" / task / "ddrm" / "recon"
    for lost in (recon / "shards" / "test-1-of-2.npz", recon / "test.npz", recon / "trajectory.csv"):
        lost.unlink()
    dry = run(two, *recon_targets(task), dry=True)
    jobs = Counter((rule, wc.get("method"), wc.get("shard")) for rule, wc in planned_jobs(dry.stdout))
    assert jobs == Counter({("sample_method_torch", "ddrm", "1"): 1, ("gather_method", "ddrm", None): 1}), dry.stdout[-3000:]
    run(two, *recon_targets(task))
    np.testing.assert_array_equal(read_outputs(root, task)["ddrm"]["x_hat"], unsharded["ddrm"]["x_hat"])


class SplitCase:
    """A copy of the tiny run, one target, and configs that differ only in one shard size."""

    def __init__(self, tiny_run, tmp_path, target, key, edit):
        source, self.base = tiny_run
        self.root, self.tmp, self.target, self.key, self.edit = tmp_path / "work", tmp_path, target, key, edit
        shutil.copytree(source, self.root, symlinks=True)

    def config(self, shard_size):
        cfg = yaml.safe_load(self.base.read_text())
        self.edit(cfg)
        cfg["cluster"] = {"shard_size": {self.key: shard_size}}
        path = self.tmp / f"{self.key}-{shard_size}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def run(self, config, dry=False):
        args = ("-n",) if dry else TWO_JOBS_AT_ONCE
        return snakemake(*args, self.target, workdir=self.root, config=config, snakefile=self.root / "Snakefile")

    def planned(self, config):
        return Counter((rule, wc.get("shard")) for rule, wc in planned_jobs(self.run(config, dry=True).stdout))


def test_metrics_in_two_shards_equal_one(tiny_run, tmp_path):
    """cluster.shard_size.metrics: two `metrics_shard` jobs and a gathering `metrics` job write the
    same per_image.csv and aggregate.csv as one job scoring every image."""
    case = SplitCase(tiny_run, tmp_path, "results/photos/deblur/ddrm/metrics/aggregate.csv", "metrics",
                     lambda cfg: cfg["metrics"].update(batch_size=2))  # the 4 test images in 2 scoring batches  # fmt: skip
    folder = case.root / "results" / "photos" / "deblur" / "ddrm" / "metrics"
    case.run(case.config(None))
    whole = {name: (folder / name).read_bytes() for name in ("per_image.csv", "aggregate.csv")}
    sharded = case.config(2)
    jobs = case.planned(sharded)
    assert jobs == Counter({("metrics_shard", "0"): 1, ("metrics_shard", "1"): 1, ("metrics", None): 1}), jobs
    case.run(sharded)
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["0-of-2.npz", "1-of-2.npz"]
    for name, content in whole.items():
        assert (folder / name).read_bytes() == content, name


def test_grid_tuning_in_two_shards_chooses_and_scores_as_one(tiny_run, tmp_path):
    """cluster.shard_size.tune_ddrm: two `tune_method_shard` jobs reconstruct the grid's batches,
    and the tuning job scores them: the same chosen.yaml and grid.csv as an unsplit tune (but for
    the wall-clock column)."""
    import pandas as pd

    case = SplitCase(tiny_run, tmp_path, "results/photos/deblur/ddrm/tuning/chosen.yaml", "tune_ddrm",
                     lambda cfg: cfg["ddrm"]["hparams"].update(batch_size=2))  # 2 grid points x 2 batches of the 4 val images  # fmt: skip
    folder = case.root / "results" / "photos" / "deblur" / "ddrm" / "tuning"
    case.run(case.config(None))
    chosen, grid = (folder / "chosen.yaml").read_text(), pd.read_csv(folder / "grid.csv")
    split = case.config(4)  # 4 pairs per shard: 2 shards
    jobs = case.planned(split)
    assert jobs == Counter({("tune_method_shard", "0"): 1, ("tune_method_shard", "1"): 1, ("tune_method_torch", None): 1}), jobs
    case.run(split)
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["0-of-2.npz", "1-of-2.npz"]
    assert (folder / "chosen.yaml").read_text() == chosen
    timing = [c for c in grid.columns if c.startswith("seconds")]
    pd.testing.assert_frame_equal(pd.read_csv(folder / "grid.csv").drop(columns=timing), grid.drop(columns=timing))
