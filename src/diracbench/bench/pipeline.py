"""Pipeline overhead: `snakemake -n` with nothing to do, and per-stage wall times.

The dry run is timed on the default target `all` with the configuration of the running workflow
(written to a temporary file and passed with --replace-workflow-config), from a fresh process as a
user would start it. It cannot be the `bench` target itself: that DAG contains the running bench
job, so it is never up to date while it is measured. `all` is, because the bench rule takes every
output of `all` as its input. A dry run does not take Snakemake's lock, so it runs beside the
Snakemake process that is executing the bench. Each row records how many jobs the dry run found,
so a measurement on a workflow that was not up to date is visible as such.

Per-stage wall times come from the `benchmark:` files of the rules (results/benchmarks/<rule>/
<job>.tsv, one row per repeat). A job's start is estimated as the file's modification time minus
its wall time; the span from the first start to the last end is the end-to-end time of the run
when all jobs came from one run.
"""

from __future__ import annotations

import datetime as _dt
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

from diracbench.errors import UserError

DRYRUN_COLUMNS = ["target", "repeat", "seconds", "jobs_pending", "returncode"]
STAGE_COLUMNS = ["rule", "job", "seconds", "max_rss_mb", "cpu_time_s", "mean_load", "started", "finished"]


def pending_jobs(output: str) -> int | None:
    """Jobs a dry run would execute: 0 for 'Nothing to be done', the 'total' of the job stats, else None."""
    if re.search(r"Nothing to be done", output):
        return 0
    match = re.search(r"^\s*total\s+(\d+)\s*$", output, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def time_dry_run(python: str, snakefile: Path, workdir: Path, config: dict, target: str, repeats: int) -> pd.DataFrame:
    import yaml

    rows = []
    with tempfile.TemporaryDirectory(prefix="diracbench-dryrun-") as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [python, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
               "--configfile", str(config_file), "--replace-workflow-config", "-n", target]
        for k in range(repeats):
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(workdir))
            seconds = time.perf_counter() - start
            output = proc.stdout + proc.stderr
            if proc.returncode != 0:
                tail = output.strip().splitlines()[-3:]
                raise UserError(f"bench pipeline: `snakemake -n {target}` failed (exit {proc.returncode}): {' | '.join(tail)}")
            rows.append({"target": target, "repeat": k, "seconds": seconds, "jobs_pending": pending_jobs(output), "returncode": proc.returncode})
    return pd.DataFrame(rows, columns=DRYRUN_COLUMNS)


def read_benchmark_tsv(path: Path) -> dict:
    """One Snakemake benchmark file -> wall seconds (mean over repeats), memory, CPU time, load."""
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise UserError(f"{path} is not a Snakemake benchmark file ({err.__class__.__name__}); delete it and rerun its rule") from None
    if "s" not in table.columns or table.empty:
        raise UserError(f"{path} has no 's' (wall seconds) column; delete it and rerun its rule")
    finished = path.stat().st_mtime
    seconds = float(table["s"].astype(float).mean())
    started = finished - float(table["s"].astype(float).sum())

    def col(name: str) -> float:
        return float(pd.to_numeric(table[name], errors="coerce").mean()) if name in table.columns else float("nan")

    iso = lambda ts: _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")
    return {"seconds": seconds, "max_rss_mb": col("max_rss"), "cpu_time_s": col("cpu_time"), "mean_load": col("mean_load"), "started": iso(started), "finished": iso(finished)}


# Records of the targets outside `all` (the bench itself, `seeds`, `ablations`) and of the seed
# replicates' jobs (`<dataset>-seed<N>_...`): counting them would stretch the default run's span
# over whatever ran later.
_OTHER_TARGET_RULES = re.compile(r"^(?:bench|seeds)|ablation")
_REPLICATE_JOB = re.compile(r"-seed\d+(?:[_.]|$)")


def stage_times(benchmarks: Path) -> pd.DataFrame:
    """Every `<benchmarks>/<rule>/<job>.tsv` of the default target's jobs (see _OTHER_TARGET_RULES)."""
    rows = []
    for path in sorted(benchmarks.glob("*/*.tsv")):
        rule = path.parent.name
        if _OTHER_TARGET_RULES.search(rule) or _REPLICATE_JOB.search(path.stem):
            continue
        rows.append({"rule": rule, "job": path.stem, **read_benchmark_tsv(path)})
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


def stage_summary(stages: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total and largest wall time, total CPU time, sorted by total wall time.

    CPU time beside wall time shows how much of a slow stage was waiting for a busy machine."""
    if stages.empty:
        return pd.DataFrame(columns=["rule", "jobs", "total_s", "max_s", "cpu_s"])
    grouped = stages.groupby("rule").agg(jobs=("seconds", "count"), total_s=("seconds", "sum"), max_s=("seconds", "max"), cpu_s=("cpu_time_s", "sum")).reset_index()
    return grouped.sort_values("total_s", ascending=False).reset_index(drop=True)


def run_span(stages: pd.DataFrame) -> float:
    """Seconds from the first job's start to the last job's end."""
    if stages.empty:
        return float("nan")
    start = pd.to_datetime(stages["started"]).min()
    end = pd.to_datetime(stages["finished"]).max()
    return float((end - start).total_seconds())


def median_dry_run(dry: pd.DataFrame) -> float:
    return float(statistics.median(dry["seconds"])) if len(dry) else float("nan")
