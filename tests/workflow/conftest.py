"""Shared workflow fixtures: one tiny end-to-end run, in a copy of the workflow, per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smk import TWO_JOBS_AT_ONCE, copy_workflow, snakemake  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny configuration run to completion once: (copy of the workflow, its tiny config)."""
    root = copy_workflow(tmp_path_factory.mktemp("tiny"))
    config = root / "tests" / "configs" / "tiny.yaml"
    snakemake(*TWO_JOBS_AT_ONCE, workdir=root, config=config, snakefile=root / "Snakefile", timeout=1500)
    return root, config
