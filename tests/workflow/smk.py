"""Running the real Snakemake CLI from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(*args: str, workdir: Path | None = None, config: Path | None = TINY, timeout: int = 1200, check: bool = True) -> subprocess.CompletedProcess:
    """`snakemake` on the repository's Snakefile; with `config`, that file replaces config.yaml."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
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
