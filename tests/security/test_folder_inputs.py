"""Dataset folders are inputs of prepare_data (issue 15, item 6).

Probe: replacing or deleting an image in a folder dataset left `snakemake -n` at "Nothing to be
done", because prepare_data depended only on code. Now the files' names, sizes and mtimes are
part of its settings: an edit plans prepare_data and its dependents, no edit plans nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from smk import TINY, copy_workflow, planned_jobs, snakemake  # noqa: E402

pytestmark = pytest.mark.workflow

TARGET = "results/folderset/deblur/measurements/test.npz"


def make_folder(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")


def folder_config(tmp_path: Path, batch_size: int = 8) -> Path:
    data = tmp_path / "data"
    for split, n, seed in (("train", 12, 1), ("val", 4, 2), ("test", 4, 3)):
        make_folder(data / split, n, seed)
    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"] = {"folderset": {"image_size": 16, "source": {"kind": "folders", **{s: {"protocol": "plain", "root": str(data / s)} for s in ("train", "val", "test")}}}}
    cfg["training"]["batch_size"] = batch_size
    path = tmp_path / "folders.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rules(proc) -> list[str]:
    return sorted(rule for rule, _ in planned_jobs(proc.stdout + proc.stderr))


def test_editing_or_deleting_a_folder_image_reruns_prepare_data_and_its_dependents(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    config = folder_config(tmp_path)
    kw = dict(workdir=root, config=config, snakefile=root / "Snakefile", timeout=600)
    snakemake("--cores", "2", TARGET, **kw)
    assert _rules(snakemake("-n", TARGET, **kw)) == []  # unchanged: nothing to do

    # Replace one training image by another picture (as a user fixing a bad file would).
    victim = tmp_path / "data" / "train" / "img03.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(victim)
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    assert _rules(snakemake("-n", TARGET, **kw)) == ["measure", "prepare_data"]

    snakemake("--cores", "2", TARGET, **kw)
    assert _rules(snakemake("-n", TARGET, **kw)) == []

    (tmp_path / "data" / "val" / "img01.png").unlink()
    assert _rules(snakemake("-n", TARGET, **kw)) == ["measure", "prepare_data"]


def test_batch_larger_than_a_folder_training_split_is_refused_before_any_job(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    config = folder_config(tmp_path, batch_size=13)
    proc = snakemake("-n", TARGET, workdir=root, config=config, snakefile=root / "Snakefile", timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert any("training.batch_size 13 is larger than the training split of datasets.folderset (12 images" in line for line in out.splitlines()), out[-2000:]
    assert not (root / "results").exists()
