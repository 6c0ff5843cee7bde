"""The resource planner: what every job of a configuration's DAG costs, before anything runs.

    python -m diracbench.plan --config workflow/presets/paper-ffhq.yaml --out-csv plan.csv --out-md plan.md
    snakemake --cores 1 plan            # results/plan.csv and results/plan.md for the active config

Per job: network parameters, FLOPs per image per NFE (FlopCounterMode on the meta device),
activation and peak memory per image, NFEs, images, the micro-batch that fits the device, and the
GPU-hours and walltime implied by the `cluster:` section's sustained throughput; sampling jobs also
get their number of shards (`cluster.shard_size`). See `plan.jobs` for the cost model and
`plan.count` for the counting.

This module imports no torch: the Snakefile calls `check`, `resources` and `shards` at every DAG
build; only the first count of a network imports torch, and figures are cached per network (in
this process and in a JSON file, `plan.count.default_cache_file`).
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

from diracbench.plan.jobs import DEFAULT_CLUSTER, SHARDABLE, SHARDABLE_TUNING, Job, PlanError, assign_shards, build_jobs, cluster_settings

__all__ = ["DEFAULT_CLUSTER", "Job", "PlanError", "check", "cluster_settings", "metric_shards", "plan", "resources", "shards", "summary", "tune_shards"]

_PLANS: dict[str, list[Job]] = {}


def _default_counter(spec: dict, modes: tuple, bf16: bool) -> dict:
    from diracbench.plan.count import count_network, default_cache_file

    return count_network(spec, tuple(modes), bf16, cache_file=default_cache_file())


def plan(config: dict, counter=None, strict: bool = True) -> list[Job]:
    """Every planned job of `config`. strict: raise the first PlanError; otherwise keep going and
    note the problem on the job (the CLI shows all of them)."""
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest() + str(strict)
    if counter is None and key in _PLANS:
        return _PLANS[key]
    jobs = build_jobs(config, counter or _default_counter)
    cluster = cluster_settings(config)
    for job in jobs:
        try:
            assign_shards(job, cluster)
        except PlanError as err:
            if strict:
                raise
            job.note = (job.note + "; " if job.note else "") + f"DOES NOT FIT: {err}"
    if counter is None:
        _PLANS[key] = jobs
    return jobs


def check(config: dict) -> None:
    """Raise PlanError (a UserError) naming the setting to change when a job cannot fit the walltime."""
    plan(config)


def _rule_name(name: str) -> str:
    return name.replace("-", "_")


def _metric_tag(method: str) -> str:
    """The planner's metrics row of a method; the workflow scores the measurement as "y"
    (metrics.evaluate.REFERENCE_METHOD), the plan calls that row "measurement"."""
    return "measurement" if method == "y" else method


def find(config: dict, rule: str, wildcards: Any) -> Job:
    """The planned job of a Snakemake rule and its wildcards (dataset, task, method/variant, dt)."""
    w = wildcards if not isinstance(wildcards, dict) else SimpleNamespace(**wildcards)
    want = _rule_name(rule)
    if want == "sample_dirac":
        want = f"sample_dirac_{w.variant}"
    for job in plan(config):
        if _rule_name(job.rule) != want or job.dataset != getattr(w, "dataset", job.dataset):
            continue
        if job.task and job.task != getattr(w, "task", job.task):
            continue
        if job.rule == "train_dirac" and job.tag != f"dt{float(w.dt):g}":
            continue
        if job.rule == "metrics" and job.tag != _metric_tag(getattr(w, "method", job.tag)):
            continue
        return job
    raise PlanError(f"the planner has no job {rule} for {vars(w)}")


def resources(config: dict, rule: str, wildcards: Any) -> dict:
    """Snakemake resources of one job: runtime (min, per shard), mem_mb (host) and gpu (the GPUs
    it runs on: one per data-parallel training process; 0 when `cluster.device` is cpu)."""
    job = find(config, rule, wildcards)
    return {"runtime": int(-(-job.walltime_min // 1)), "mem_mb": int(job.host_mem_mb), "gpu": job.processes if job.device == "gpu" else 0}


def shards(config: dict, method: str, task: str, dataset: str) -> int:
    """Number of shards of sample_<method> (1 when cluster.shard_size.<method> is null)."""
    if method not in SHARDABLE:
        raise PlanError(f"{method} is not a shardable method; known: {list(SHARDABLE)}")
    rule = "sample_dirac" if method.startswith("dirac") else f"sample_{method}"
    w = {"dataset": dataset, "task": task, "variant": method.split("-", 1)[1] if method.startswith("dirac") else ""}
    return find(config, rule, w).shards


def metric_shards(config: dict, dataset: str, task: str, method: str) -> int:
    """Number of shards of one `metrics` job (cluster.shard_size.metrics; 1 when null)."""
    return find(config, "metrics", {"dataset": dataset, "task": task, "method": method}).shards


def tune_shards(config: dict, method: str, task: str, dataset: str) -> int:
    """Number of shards of one grid-tuning job (cluster.shard_size.tune_<method>; DPS and DDRM only)."""
    if f"tune_{method}" not in SHARDABLE_TUNING:
        return 1
    return find(config, f"tune_{method}", {"dataset": dataset, "task": task}).shards


def summary(jobs: list[Job]) -> dict:
    """Jobs (shards counted), GPU-hours, CPU core-hours, the longest job and the peak device memory."""
    gpu = [j for j in jobs if j.device == "gpu"]
    longest = max(jobs, key=lambda j: j.hours)
    peak = max(jobs, key=lambda j: j.memory_gib)
    return {
        "jobs": sum(j.shards for j in jobs),
        "gpu_hours": sum(j.hours for j in gpu),
        "cpu_core_hours": sum(j.hours * j.threads for j in jobs if j.device == "cpu"),
        "longest_job": longest.name,
        "longest_hours": longest.hours,
        "longest_walltime_segments": 1 + longest.restarts,
        "peak_memory_gib": peak.memory_gib,
        "peak_memory_job": peak.name,
    }
