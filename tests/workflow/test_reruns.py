"""Edits rerun exactly what depends on them: a DPS code edit or a DPS config edit touches DPS only."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from smk import planned_jobs, snakemake

pytestmark = pytest.mark.workflow

TASKS = ("deblur", "inpaint")
# What depends on DPS: its own tuning and sampling, its metrics, the table, the claims table, the
# figures that show DPS, their provenance records, and the default target.
DPS_FIGURES = {"fig4_data_consistency", "fig4_lpips_vs_nfe", "samples"}


def expected_dps_jobs() -> Counter:
    jobs = Counter()
    for task in TASKS:
        jobs[("tune_dps", task)] += 1
        jobs[("sample_dps", task)] += 1
        jobs[("metrics", "dps", task)] += 1  # wildcards in name order: method, task
        for name in DPS_FIGURES:
            jobs[("figure", name, task)] += 1
    jobs[("tables",)] += 1
    jobs[("claims",)] += 1  # the claims compare Dirac with DPS (NFE, LPIPS, data consistency)
    jobs[("folder_provenance", "tables")] += 1
    jobs[("folder_provenance", "figures")] += 1
    jobs[("all",)] += 1
    return jobs


def summarise(jobs) -> Counter:
    out = Counter()
    for rule, wc in jobs:
        key = (rule,) + tuple(v for k, v in sorted(wc.items()) if k not in ("dataset",))
        out[key] += 1
    return out


def dry_run(root, config):
    proc = snakemake("-n", workdir=root, config=config, snakefile=root / "Snakefile")
    return summarise(planned_jobs(proc.stdout + proc.stderr)), proc.stdout


def test_code_edit_reruns_only_dps(tiny_run):
    root, config = tiny_run
    source = root / "src" / "diracbench" / "methods" / "dps.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# an edit\n")
        jobs, out = dry_run(root, config)
    finally:
        source.write_text(original)
    assert jobs == expected_dps_jobs(), out[-4000:]
    # Restoring the content leaves nothing to do: small inputs are compared by checksum.
    assert "Nothing to be done" in snakemake("-n", workdir=root, config=config, snakefile=root / "Snakefile").stdout


def test_config_edit_reruns_only_dps(tiny_run, tmp_path):
    root, config = tiny_run
    edited = yaml.safe_load(config.read_text())
    edited["dps"]["grid"]["deblur"]["scale"] = [*edited["dps"]["grid"]["deblur"]["scale"], 0.7]
    edited["dps"]["grid"]["inpaint"]["scale"] = [*edited["dps"]["grid"]["inpaint"]["scale"], 0.7]
    edited_path = tmp_path / "tiny-edited.yaml"
    edited_path.write_text(yaml.safe_dump(edited))
    jobs, out = dry_run(root, edited_path)
    assert jobs == expected_dps_jobs(), out[-4000:]
