"""The real workflow: lint, dry runs, and the tiny configuration end to end, twice."""

from __future__ import annotations

import shutil

import pytest

from smk import REPO, snakemake

pytestmark = pytest.mark.workflow


def test_lint_is_clean():
    proc = snakemake("--lint", config=None, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_default_config_builds_a_dag(tmp_path):
    proc = snakemake("-n", "--quiet", "rules", config=REPO / "config.yaml", workdir=tmp_path, timeout=300)
    assert "prepare_data" in proc.stdout + proc.stderr


def test_tiny_chain_produces_every_output(tiny_run):
    root, _ = tiny_run
    for task in ("deblur", "inpaint"):
        base = root / "results" / "photos" / task
        assert (base / "operator.json").is_file()
        for split in ("val", "test"):
            assert (base / "measurements" / f"{split}.npz").is_file()
    assert (root / "results" / "photos" / "data" / "train.npy").is_file()


def test_second_run_has_nothing_to_do(tiny_run):
    root, config = tiny_run
    proc = snakemake("-n", workdir=root, config=config, snakefile=root / "Snakefile")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_a_moved_checkout_has_nothing_to_do(tiny_run, tmp_path):
    """Moving the project (another mount point on a cluster, a renamed folder) must not rerun jobs:
    Snakemake records the set of input paths, so none may be absolute."""
    root, config = tiny_run
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, symlinks=True)  # copy2 keeps modification times
    proc = snakemake("-n", workdir=moved, config=moved / config.relative_to(root), snakefile=moved / "Snakefile")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
