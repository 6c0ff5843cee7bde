"""Running the real Snakemake CLI from tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
# Two one-thread jobs at a time instead of one two-thread job: the tiny config's jobs are mostly
# start-up (imports, weights), so the chain takes about two thirds of the time, with no core
# oversubscribed. Threads change results only by float rounding, and every test runs at one.
TWO_JOBS_AT_ONCE = ("--cores", "2", "--max-threads", "1")


def copy_workflow(dest: Path) -> Path:
    """A self-contained copy of the workflow (Snakefile, config, workflow/, src/, test configs).

    Jobs import the package next to the Snakefile they run under, so tests may edit the copy's
    sources to see what Snakemake reruns, without touching the repository.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("workflow", "src", "envs"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore, dirs_exist_ok=True)
    (dest / "tests" / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(TINY, dest / "tests" / "configs" / "tiny.yaml")
    return dest


def snakemake(*args: str, workdir: Path | None = None, config: Path | None = TINY, timeout: int = 1200, check: bool = True, snakefile: Path | None = None) -> subprocess.CompletedProcess:
    """`snakemake` on the repository's Snakefile; with `config`, that file replaces config.yaml."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile or REPO / "Snakefile")]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    if config is not None:
        cmd += ["--configfile", str(config), "--replace-workflow-config"]
    cmd += list(args)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("job") and "count" in line)
    except StopIteration:
        return counts
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run would execute."""
    jobs = []
    rule = None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if m:
            if rule is not None:
                jobs.append((rule, {}))
            rule = m.group(1)
            continue
        if rule is not None and line.strip().startswith("wildcards:"):
            pairs = line.split("wildcards:", 1)[1].split(",")
            jobs.append((rule, dict(p.strip().split("=", 1) for p in pairs if "=" in p)))
            rule = None
        elif rule is not None and not line.strip():
            jobs.append((rule, {}))
            rule = None
    if rule is not None:
        jobs.append((rule, {}))
    return jobs
