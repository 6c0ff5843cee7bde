"""Edits rerun exactly what depends on them: a DPS code edit or a DPS config edit touches DPS only;
a trainer edit retrains, but reruns no baseline because of its code; a figures edit redraws figures only."""

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
        jobs[("tune_method_torch", "dps", task)] += 1  # wildcards in name order: method, task
        jobs[("sample_method_torch", "dps", "0", "1", task)] += 1  # method, shard, shards, task: one shard
        jobs[("gather_method", "dps", task)] += 1
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


def planned_with_reasons(output: str) -> list[tuple[str, dict[str, str], str]]:
    """(rule, wildcards, reason) of every job of a dry run's output."""
    jobs, current = [], None
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("rule ") and text.endswith(":") or text.startswith("localrule "):
            current = [text.split()[1].rstrip(":"), {}, ""]
            jobs.append(current)
        elif current is not None and text.startswith("wildcards:"):
            current[1] = dict(p.strip().split("=", 1) for p in text.split(":", 1)[1].split(",") if "=" in p)
        elif current is not None and text.startswith("reason:"):
            current[2] = text
    return [tuple(j) for j in jobs]


def _edited_dry_run(root, config, relpath):
    source = root / "src" / "diracbench" / relpath
    original = source.read_text()
    try:
        source.write_text(original + "\n# an edit\n")
        proc = snakemake("-n", workdir=root, config=config, snakefile=root / "Snakefile")
    finally:
        source.write_text(original)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("relpath", ["train.py", "training/loop.py"])
def test_trainer_edit_reruns_no_baseline_for_its_code(tiny_run, relpath):
    root, config = tiny_run
    out = _edited_dry_run(root, config, relpath)
    jobs = planned_with_reasons(out)
    rules = Counter(rule for rule, _, _ in jobs)
    # The trainer's own jobs rerun because their code changed.
    assert rules["train_prior"] == 1 and rules["train_dirac"] == 3, out[-4000:]
    for rule, wc, reason in jobs:
        if rule.startswith(("tune_method", "sample_method", "gather_method")):
            # DPS and DDRM follow the retrained prior (an input), never the trainer's source;
            # PnP-ADMM and ADMM-TV do not rerun at all.
            assert wc["method"] in ("dps", "ddrm"), (rule, wc, reason)
            assert "src/diracbench" not in reason and "Updated input files" not in reason, (rule, wc, reason)
    assert "Nothing to be done" in snakemake("-n", workdir=root, config=config, snakefile=root / "Snakefile").stdout


def test_figures_edit_reruns_only_figures(tiny_run):
    root, config = tiny_run
    jobs = summarise(planned_jobs(_edited_dry_run(root, config, "figures.py")))
    rules = {key[0] for key in jobs}
    assert rules == {"figure", "figure_schedules", "folder_provenance", "all"}, jobs
    assert jobs[("folder_provenance", "figures")] == 1 and ("folder_provenance", "tables") not in jobs
    assert sum(n for key, n in jobs.items() if key[0] == "figure") == 10


@pytest.mark.parametrize("override", ["offline=True", "device=cpu"])
def test_execution_settings_rerun_nothing(tiny_run, override):
    """How and where jobs run (the SLURM profile sets offline=True) is no rerun trigger, not even
    for the folder provenance records, whose settings are the whole config."""
    root, config = tiny_run
    out = snakemake("-n", "--config", override, workdir=root, config=config, snakefile=root / "Snakefile").stdout
    assert "Nothing to be done" in out, out[-3000:]
