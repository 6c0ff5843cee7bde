"""Pipeline overhead: reading Snakemake's benchmark files and timing an up-to-date dry run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diracbench.bench.pipeline import pending_jobs, read_benchmark_tsv, run_span, stage_summary, stage_times, time_dry_run
from diracbench.errors import UserError

MINI = """
rule all:
    input: "out/b.txt"

rule make:
    output: "out/{name}.txt"
    benchmark: "results/benchmarks/make/{name}.tsv"
    shell: "sleep 0.2; echo hi > {output}"

rule bench_thing:
    output: "out/bench.done"
    benchmark: "results/benchmarks/bench_thing/x.tsv"
    shell: "echo > {output}"
"""


def test_benchmark_files_of_a_real_run_and_an_up_to_date_dry_run(tmp_path):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(MINI)
    before = time_dry_run(sys.executable, snakefile, tmp_path, {}, "all", repeats=1)
    assert list(before["jobs_pending"]) == [2]  # make + all
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(tmp_path), "--cores", "1", "all", "out/bench.done"], check=True, capture_output=True)
    stages = stage_times(tmp_path / "results" / "benchmarks")
    assert list(stages["rule"]) == ["make"] and list(stages["job"]) == ["b"]  # the bench's own rules are left out
    row = stages.iloc[0]
    assert 0.2 <= row["seconds"] and row["started"] <= row["finished"]
    assert run_span(stages) == pytest.approx(row["seconds"], abs=1.0)
    assert stage_summary(stages).loc[0, "jobs"] == 1
    after = time_dry_run(sys.executable, snakefile, tmp_path, {}, "all", repeats=2)
    assert list(after["jobs_pending"]) == [0, 0] and (after["seconds"] > 0).all()


def test_benchmark_tsv_with_repeats_and_broken_files(tmp_path):
    path = tmp_path / "job.tsv"
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    "2.00\t0:00:02\t506.40\t3141.41\t275.45\t386.84\t0.00\t2.29\t72.99\t1.98\n"
                    "4.00\t0:00:04\t510.00\t3141.41\t275.45\t386.84\t0.00\t2.29\t80.00\t3.98\n")
    rec = read_benchmark_tsv(path)
    assert rec["seconds"] == pytest.approx(3.0) and rec["max_rss_mb"] == pytest.approx(508.2) and rec["cpu_time_s"] == pytest.approx(2.98)
    path.write_text("")
    with pytest.raises(UserError, match="not a Snakemake benchmark file"):
        read_benchmark_tsv(path)
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(UserError, match="'s'"):
        read_benchmark_tsv(path)


def test_pending_jobs_reads_the_dry_run_report():
    assert pending_jobs("Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).") == 0
    stats = "Job stats:\njob        count\n-------  -------\nall            1\nmake           3\ntotal          4\n"
    assert pending_jobs(stats) == 4
    assert pending_jobs("something else") is None


def test_the_span_counts_only_the_default_targets_jobs(tmp_path):
    # A seeds replicate, the seeds tables and an ablation figure ran an hour after the default run:
    # none of them belongs to its span.
    import os

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    records = {"train_dirac/photos_deblur_dt1": 0, "metrics/photos_deblur_dps": 100,
               "train_dirac/photos-seed2_deblur_dt1": 3600, "metrics/photos-seed12_inpaint_ddrm": 3700,
               "seeds_tables/photos": 3800, "figure_ablation_guidance/photos_deblur": 3900, "ablation_lookahead/photos_deblur_dt0": 3900,
               "bench_methods/bench": 4000}
    for name, finished in records.items():
        path = tmp_path / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + "10.0\t0:00:10\t1\t1\t1\t1\t0\t0\t50\t9\n")
        os.utime(path, (1e9 + finished, 1e9 + finished))
    stages = stage_times(tmp_path)
    assert sorted(stages["job"]) == ["photos_deblur_dps", "photos_deblur_dt1"]
    assert run_span(stages) == pytest.approx(110.0)
