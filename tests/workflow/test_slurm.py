"""The tiny configuration on a real single-node Slurm cluster, through the committed SLURM profile.

`test_tiny_workflow_on_slurm` installs Slurm and munge from Debian packages when missing,
starts a one-node cluster (tests/workflow/slurm_cluster.py), and runs

    snakemake --executor slurm --workflow-profile workflow/profiles/slurm \
        --profile tests/profiles/slurm-ci --configfile <tiny, deblurring, 3 methods> \
        --replace-workflow-config --max-threads 1 --verbose results/tables/photos.md

in a fresh working directory: Table 1 of the tiny config with the deblurring task and one method
per rule family, its Dirac model trained by 2 processes (torchrun, gloo), one CPU per job. It
checks: the 2-process job asked for 2 GPUs and ran 2 ranks; every output exists; every job was
submitted through sbatch with the test site profile's partition; every job of a GPU rule
(resources gpu>0 or a gpu gres) asked Slurm for a GPU and no other job did; the gather steps ran
locally; and a second run does nothing.

It skips only where the machine cannot host the cluster (not root, no apt, or a Slurm that the
test did not set up); in CI (CI=true) or with DIRACBENCH_REQUIRE_SLURM=1 that skip is a failure.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

# The helper sits next to this file; importable under any pytest --import-mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
WORKFLOW_PROFILE = REPO / "workflow" / "profiles" / "slurm"
CI_PROFILE = REPO / "tests" / "profiles" / "slurm-ci"
SITE_EXAMPLE_PROFILE = REPO / "workflow" / "profiles" / "slurm-site-example"
# The Slurm run of the whole tiny DAG takes longer than the project-wide per-test limit
# (pytest-timeout in pyproject) allows on a busy machine; the test's own limit is this plus the
# rerun and checks, and this one fires first so a hang fails with context and the cluster is
# still stopped.
RUN_TIMEOUT_S = float(os.environ.get("DIRACBENCH_SLURM_TIMEOUT", "1500"))


def snakemake(workdir: Path, *args: str, config: Path = TINY_CONFIG) -> list[str]:
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(config),
        "--replace-workflow-config",
        *args,
    ]  # fmt: skip


# One method per rule family (sample_dirac, sample_method_torch, sample_method_scico) and one task
# (deblur, whose greedy schedule runs a real search): a fifth of the tiny DAG's jobs, because each
# Slurm job pays Snakemake's start-up and a status poll.
SLURM_METHODS = ["dirac-po", "dps", "admm-tv"]
# Table 1 and everything it needs: data, schedule, both trainings (one data-parallel), tuning,
# sharded sampling with its local gathers, metrics. Figures, Tables 2-3 and the claims table are
# CPU jobs of the same kind as `tables`, left to the local runs of the other workflow tests.
SLURM_TARGET = "results/tables/photos.md"


def ddp_config(path: Path, task: str = "deblur") -> Path:
    """The tiny config for one task and SLURM_METHODS, its Dirac model trained by two processes (gloo)."""
    import yaml

    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    others = set(cfg["tasks"]) - {task}

    def keep_one_task(node: object) -> None:
        if isinstance(node, dict):
            for other in [k for k in node if k in others]:
                del node[other]
            for value in node.values():
                keep_one_task(value)

    keep_one_task(cfg)
    cfg["methods"] = SLURM_METHODS
    cfg["dirac"]["tasks"][task]["training"] = {"execution": {**cfg["training"]["execution"], "processes": 2}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# --- reading Snakemake's --verbose log -----------------------------------------------------


@dataclass(frozen=True)
class Job:
    jobid: str
    rule: str
    resources: str  # the job's `resources:` line as Snakemake printed it
    local: bool


def parse_jobs(log: str) -> dict[str, Job]:
    """The job blocks ("rule x:" / "localrule x:" followed by indented fields), by jobid."""
    jobs: dict[str, Job] = {}
    rule, local, fields = None, False, {}

    def flush() -> None:
        if rule is not None and "jobid" in fields:
            jobs[fields["jobid"]] = Job(fields["jobid"], rule, fields.get("resources", ""), local)

    for line in log.splitlines():
        head = re.fullmatch(r"(local)?rule (\w+):", line.strip()) if not line.startswith(" ") else None
        if head:
            flush()
            rule, local, fields = head.group(2), bool(head.group(1)), {}
        elif rule is not None and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            fields.setdefault(key, value)
        elif rule is not None:
            flush()
            rule, fields = None, {}
    flush()
    return jobs


def parse_submissions(log: str) -> dict[str, str]:
    """jobid -> Slurm log directory of its submission (unique per rule and wildcards)."""
    found = re.findall(r"Job (\d+) has been submitted with SLURM jobid \d+ \(log: (.+?)\)\.?$", log, re.M)
    return {jobid: str(Path(path).parent) for jobid, path in found}


def parse_sbatch_calls(log: str) -> dict[str, str]:
    """Slurm log directory (from --output) -> the sbatch command line the plugin ran."""
    calls = {}
    for call in re.findall(r"sbatch call: (sbatch .*)$", log, re.M):
        argv = shlex.split(call)
        calls[str(Path(argv[argv.index("--output") + 1]).parent)] = call
    return calls


def requests_gpu(resources: str) -> bool:
    gpu = re.search(r"(?:^|, )gpus?=(\d+)(?:,|\s|$)", resources)
    gres = re.search(r"(?:^|, )gres=([^,]*)", resources)
    return bool(gpu and int(gpu.group(1)) > 0) or bool(gres and "gpu" in gres.group(1))


def sbatch_requests_gpu(call: str) -> bool:
    return bool(re.search(r"(?:^|\s)(--gpus[= ]\S+|--gres[= ]\S*gpu)", call.split(" --wrap=")[0]))


def check_submissions(log: str, partition: str) -> tuple[list[tuple[Job, str]], list[str]]:
    """Pair every submitted job with its sbatch line; return the pairs and what is wrong."""
    jobs, submitted, calls = parse_jobs(log), parse_submissions(log), parse_sbatch_calls(log)
    pairs, errors = [], []
    for job in jobs.values():
        if job.local:
            continue
        if job.jobid not in submitted:
            errors.append(f"job {job.jobid} ({job.rule}) was not submitted through sbatch")
            continue
        call = calls.get(submitted[job.jobid])
        if call is None:
            errors.append(f"no 'sbatch call' line for job {job.jobid} ({job.rule}); was --verbose given?")
            continue
        pairs.append((job, call))
        if f" -p {partition}" not in call:
            errors.append(f"job {job.jobid} ({job.rule}): partition {partition} from the site profile missing: {call}")
        if requests_gpu(job.resources) and not sbatch_requests_gpu(call):
            errors.append(f"GPU job {job.jobid} ({job.rule}) was submitted without a GPU request: {call}")
        if not requests_gpu(job.resources) and sbatch_requests_gpu(call):
            errors.append(f"CPU job {job.jobid} ({job.rule}) was submitted with a GPU request: {call}")
    return pairs, errors


def read_summary(workdir: Path, config: Path = TINY_CONFIG, *targets: str) -> list[dict[str, str]]:
    out = subprocess.run(snakemake(workdir, "--summary", *targets, config=config), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
    header, rows = lines[0], lines[1:]
    assert header[:3] == ["output_file", "date", "rule"], header
    return [dict(zip(header, row)) for row in rows]


# --- log parsing on its own (no cluster needed) --------------------------------------------

SAMPLE_LOG = """\
[Thu Nov 26 22:53:07 2026]
rule train_dirac:
    output: results/photos/deblur/models/dirac-dt0.05/weights.pt
    jobid: 4
    wildcards: dataset=photos, task=deblur
    threads: 2
    resources: tmpdir=<TBD>, mem_mb=4000, runtime=60, slurm_partition=debug, gpu=1, cpus_per_gpu=2
sbatch call: sbatch --parsable --job-name abc --output /w/.snakemake/slurm_logs/rule_train_dirac/photos_deblur/%j.log --export=ALL --comment rule_train_dirac_wildcards_photos_deblur -p debug -t 60 --mem 4000 --cpus-per-gpu=2 --gpus=1 --wrap="python -m snakemake --target-jobs 'train_dirac:dataset=photos,task=deblur'"
Job 4 has been submitted with SLURM jobid 7 (log: /w/.snakemake/slurm_logs/rule_train_dirac/photos_deblur/7.log).
[Thu Nov 26 22:53:08 2026]
rule tune_admm_tv:
    jobid: 5
    resources: tmpdir=<TBD>, mem_mb=2000, runtime=30, slurm_partition=debug
sbatch call: sbatch --parsable --job-name abc --output /w/.snakemake/slurm_logs/rule_tune_admm_tv/photos_inpaint/%j.log --export=ALL --comment rule_tune_admm_tv -p debug --ntasks=1 --cpus-per-task=1 --wrap="python -m snakemake --set-resources 'x:gpus=1'"
Job 5 has been submitted with SLURM jobid 8 (log: /w/.snakemake/slurm_logs/rule_tune_admm_tv/photos_inpaint/8.log).
localrule all:
    jobid: 0
    resources: tmpdir=/tmp
"""


def test_log_parsing_pairs_jobs_with_their_sbatch_lines() -> None:
    pairs, errors = check_submissions(SAMPLE_LOG, "debug")
    assert errors == []
    assert [(job.rule, "--gpus=1" in call) for job, call in pairs] == [("train_dirac", True), ("tune_admm_tv", False)]


def test_log_parsing_flags_a_gpu_job_without_gpu_request() -> None:
    log = SAMPLE_LOG.replace(" --gpus=1 --wrap", " --wrap")
    _, errors = check_submissions(log, "debug")
    assert len(errors) == 1 and "GPU job 4 (train_dirac)" in errors[0]


def test_log_parsing_flags_gres_switch_and_cpu_job_with_gpu() -> None:
    log = SAMPLE_LOG.replace("gpu=1, cpus_per_gpu=2", "gpu=0, gres=gpu:1").replace("--gpus=1", "--gres=gpu:1")
    log = log.replace("--cpus-per-task=1 --wrap", "--cpus-per-task=1 --gpus=1 --wrap")
    _, errors = check_submissions(log, "debug")
    assert len(errors) == 1 and "CPU job 5 (tune_admm_tv)" in errors[0]


def test_log_parsing_flags_missing_submission_and_partition() -> None:
    log = SAMPLE_LOG.replace("Job 5 has been submitted", "Job 55 has been submitted").replace("-p debug -t 60", "-t 60")
    _, errors = check_submissions(log, "debug")
    assert any("job 5 (tune_admm_tv) was not submitted" in e for e in errors)
    assert any("job 4 (train_dirac): partition debug" in e for e in errors)


# --- the profiles parse and combine --------------------------------------------------------


@pytest.mark.workflow
@pytest.mark.parametrize("site_profile", [CI_PROFILE, SITE_EXAMPLE_PROFILE], ids=["slurm-ci", "site-example"])
def test_slurm_profiles_load_in_a_dry_run(tmp_path: Path, site_profile: Path) -> None:
    cmd = snakemake(tmp_path, "--dry-run", "--workflow-profile", str(WORKFLOW_PROFILE), "--profile", str(site_profile))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    partition = "debug" if site_profile == CI_PROFILE else "cpu"
    assert f"slurm_partition={partition}" in text, "the site profile's default-resources were not applied"
    if site_profile == SITE_EXAMPLE_PROFILE:
        # The example must cover every GPU rule, or a copied site profile sends one to the CPU partition.
        missed = sorted({j.rule for j in parse_jobs(text).values() if requests_gpu(j.resources) and "slurm_partition=gpu" not in j.resources})
        assert not missed, f"GPU rules missing from {SITE_EXAMPLE_PROFILE}/config.yaml set-resources: {missed}"


@pytest.mark.workflow
def test_site_example_profile_names_existing_rules(tmp_path: Path) -> None:
    # Snakemake ignores set-resources entries for unknown rules, so a renamed rule would
    # silently lose its GPU partition on every site that copied the example.
    import yaml

    example = yaml.safe_load((SITE_EXAMPLE_PROFILE / "config.yaml").read_text())
    out = subprocess.run(snakemake(tmp_path, "--list-rules"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rules = set(out.stdout.split())
    unknown = sorted(set(example["set-resources"]) - rules)
    assert not unknown, f"{SITE_EXAMPLE_PROFILE}/config.yaml names rules that do not exist: {unknown}"


# --- the real cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    # Not under pytest's tmp dir: that is private to root (0700) and slurmctld runs as `slurm`.
    root = Path(tempfile.mkdtemp(prefix="diracbench-slurm-"))
    try:
        with slurm_cluster.single_node_cluster(root) as c:
            yield c
    except slurm_cluster.SlurmUnavailable as why:
        # In CI (CI=true) the cluster is part of what is tested: a skip would hide a regression.
        if os.environ.get("DIRACBENCH_REQUIRE_SLURM") == "1" or os.environ.get("CI") == "true":
            pytest.fail(f"CI / DIRACBENCH_REQUIRE_SLURM=1 but no test cluster: {why}")
        pytest.skip(f"no single-node Slurm test cluster here: {why}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.workflow
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_tiny_workflow_on_slurm(cluster: slurm_cluster.SlurmCluster, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    # One training job runs data-parallel: torchrun with 2 gloo ranks inside one Slurm job.
    config = ddp_config(tmp_path / "tiny-ddp.yaml")
    # --max-threads 1: each job asks Slurm for one CPU, so two jobs share the node's two CPUs
    # (the tiny jobs are mostly start-up); a rule asking for more CPUs than the node has would
    # never be scheduled.
    cmd = snakemake(
        workdir,
        "--executor", "slurm",
        "--workflow-profile", str(WORKFLOW_PROFILE),
        "--profile", str(CI_PROFILE),
        "--max-threads", "1",
        "--verbose",
        SLURM_TARGET,
        config=config,
    )  # fmt: skip
    # DIRACBENCH_SLURM_LOG_DIR keeps Snakemake's --verbose log (CI can upload it as an artifact).
    log_dir = Path(os.environ.get("DIRACBENCH_SLURM_LOG_DIR") or tmp_path)
    log_dir.mkdir(parents=True, exist_ok=True)
    first_log = log_dir / "snakemake-slurm.log"
    started = time.monotonic()
    with first_log.open("w") as fh:
        try:
            first = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            first = None
    first_seconds = time.monotonic() - started
    log = first_log.read_text()

    def context() -> str:
        # The failed rules' own logs first: that is where a job's traceback is.
        rule_logs = dict.fromkeys(re.findall(r"^Error in rule \w+:(?:\n {4}.*)*?\n {4}log: ([^,\s]+)", log, re.M))
        slurm_logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))[-3:]
        tails = []
        for path in [workdir / p for p in rule_logs] + slurm_logs:
            if path.is_file() and path.stat().st_size:
                tails.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(["--- snakemake (last 60 lines)", *log.splitlines()[-60:], *tails, cluster.diagnostics(15)])

    assert first is not None, f"snakemake on Slurm timed out after {RUN_TIMEOUT_S:.0f} s\n{context()}"
    assert first.returncode == 0, f"snakemake on Slurm failed ({first.returncode})\n{context()}"

    pairs, errors = check_submissions(log, cluster.partition)
    assert pairs, f"no job was submitted to Slurm\n{context()}"
    assert not errors, "\n".join(errors)
    # The profile's retries would hide a job that fails once; the tiny config never needs one.
    restarted = re.findall(r"^Trying to restart job (\d+)", log, re.M)
    assert not restarted, f"jobs {restarted} failed and were retried\n{context()}"

    # The data-parallel job: asked Slurm for 2 GPUs (placeholders here), ran 2 gloo ranks.
    ddp_jobs = [(job, call) for job, call in pairs if job.rule == "train_dirac" and "train_procs=2" in job.resources]
    assert len(ddp_jobs) == 1, [(j.rule, j.resources) for j, _ in pairs if j.rule == "train_dirac"]
    assert "--gpus=2" in ddp_jobs[0][1], ddp_jobs[0][1]
    ddp_logs = [p for p in (workdir / "results" / "logs" / "train_dirac").glob("*.log") if "2 process(es)" in p.read_text()]
    assert len(ddp_logs) == 1, "no train_dirac log shows a 2-process run"
    assert "trained 20 steps" in ddp_logs[0].read_text()

    summary = read_summary(workdir, config, SLURM_TARGET)
    assert summary, "snakemake --summary lists no outputs"
    for row in summary:
        assert (workdir / row["output_file"]).exists(), f"{row['output_file']} ({row['rule']}) missing after the Slurm run"
        assert row["status"] == "ok", f"{row['output_file']}: status {row['status']!r} after the Slurm run"
        logs = row.get("log-file(s)", "-")
        for log_file in [] if logs in ("", "-") else logs.split(","):
            assert (workdir / log_file.strip()).exists(), f"log {log_file} of {row['rule']} missing"
    submitted_rules = {job.rule for job, _ in pairs}
    local_rules = {job.rule for job in parse_jobs(log).values() if job.local}
    # Joining shards is file work on the submit host, never a cluster job.
    assert {"gather_dirac", "gather_method"} <= local_rules and not {"gather_dirac", "gather_method"} & submitted_rules, (local_rules, submitted_rules)
    unseen = {row["rule"] for row in summary} - submitted_rules - local_rules
    assert not unseen, f"outputs of {sorted(unseen)} were not made by a job of this run"

    started = time.monotonic()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    second_seconds = time.monotonic() - started
    rerun_log = second.stdout + second.stderr
    assert second.returncode == 0, rerun_log[-4000:]
    assert "Nothing to be done" in rerun_log, f"the rerun was not a no-op:\n{rerun_log[-4000:]}"
    assert "sbatch call:" not in rerun_log

    gpu_pairs = [(job, call) for job, call in pairs if requests_gpu(job.resources)]
    # The jobs' own run time (benchmark files) against the wall time shows the Slurm overhead.
    own_seconds = sum(
        float(next(csv.DictReader(p.open(), delimiter="\t"))["s"]) for p in (workdir / "results" / "benchmarks").rglob("*.tsv")
    )
    print(
        f"\nSlurm: packages installed in {cluster.install_seconds:.1f} s, cluster up in {cluster.start_seconds:.1f} s; "
        f"workflow {first_seconds:.1f} s for {len(pairs)} Slurm jobs (their own run time {own_seconds:.1f} s); "
        f"rerun {second_seconds:.1f} s. One sbatch line per rule:"
    )
    for rule in sorted(submitted_rules):
        job, call = next((j, c) for j, c in pairs if j.rule == rule)
        print(f"  {rule} (job {job.jobid}): {call.split(' --wrap=')[0]}")
    if gpu_pairs:
        print(f"GPU request check exercised on {len(gpu_pairs)} jobs of {sorted({j.rule for j, _ in gpu_pairs})}")
    else:
        warnings.warn(
            "GPU request check not exercised: no job of the tiny config's DAG requests a GPU "
            f"(rules submitted: {sorted(submitted_rules)})",
            stacklevel=1,
        )
