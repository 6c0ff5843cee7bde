"""The embedded default's `extended:` task (sr4) and method (diffpir) stay out of `all`, and the
`extended` target runs every method on sr4 and DiffPIR on every task, into copies of Table 1 and
the figures under results/extended/ (dry runs: the real run is timed in the README)."""

from __future__ import annotations

import pytest

from smk import REPO, job_counts, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
DEFAULT = REPO / "config.yaml"


def _jobs(target: str | None, tmp_path):
    args = ("-n",) + ((target,) if target else ())
    out = snakemake(*args, config=DEFAULT, workdir=tmp_path, timeout=300)
    text = out.stdout + out.stderr
    return job_counts(text), planned_jobs(text)


def test_all_leaves_the_extended_task_and_method_out(tmp_path):
    counts, jobs = _jobs(None, tmp_path)
    assert not [(r, w) for r, w in jobs if w.get("task") == "sr4" or w.get("method") == "diffpir"]
    assert counts["train_dirac"] == 2 and "tables_extended" not in counts


def test_the_extended_target_adds_sr4_for_every_method_and_diffpir_for_every_task(tmp_path):
    counts, jobs = _jobs("extended", tmp_path)
    sampled = {(w.get("method") or f"dirac-{w['variant']}", w["task"]) for r, w in jobs if r.startswith("gather_")}
    methods = ["dirac-po", "dirac-do", "dps", "ddrm", "pnp-admm", "admm-tv", "diffpir"]
    assert sampled == {(m, t) for m in methods for t in ("deblur", "inpaint", "sr4")}
    assert counts["tables_extended"] == 1 and counts["train_dirac"] == 3 and counts["extended"] == 1
    figures = {w["task"] for r, w in jobs if r == "figure_extended"}
    assert figures == {"deblur", "inpaint", "sr4"} and counts["figure_schedules_extended"] == 1
    # Table 1 of `all` is not part of the target: the extended copy has its own file.
    assert "tables" not in counts
