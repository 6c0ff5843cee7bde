"""Cost at quality: every method's NFE, network passes, seconds per image and peak memory, next to
the test PSNR/LPIPS the default run measured for it: over all the images the method scored, and
over the images that every method of the task scored (DPS scores a subset), for fair comparisons.

Each (dataset, task, method) runs in its own subprocess (`method-run`), so the peak resident set
size (VmHWM) is that method's own and not the maximum of everything before it; on CUDA the peak
allocated GPU memory is recorded as well. A run reconstructs the first `max_images` test images
with exactly the settings of the method's sample rule and the hyper-parameters its tuning rule
chose on val, at the configured batch size (capped by the number of images), with trajectory
logging, per-step LPIPS and posterior samples switched off: the cost of the reconstruction, not of
the figures. No warm-up run: a JAX method's compilation is part of what a user pays once per job.
Network forward/backward passes are counted by hooks (`counters.NetworkCounter`).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diracbench.bench.counters import NetworkCounter
from diracbench.bench.machine import current_rss_mb, machine_info, peak_rss_mb, synchronize
from diracbench.errors import UserError
from diracbench.methods.registry import spec as method_spec
from diracbench.metrics.image_quality import psnr

COLUMNS = [
    "dataset", "task", "method", "n_images", "batch_size", "nfe", "forward_per_image", "backward_per_image",
    "seconds_per_image", "wall_per_image", "peak_rss_mb", "start_rss_mb", "cuda_peak_mb", "bench_psnr",
    "psnr", "lpips", "quality_n", "paired_psnr", "paired_lpips", "paired_n", "default_run_seconds_per_image",
    "networks", "device", "note",
]


def quiet_hparams(method: str, hparams: dict) -> dict:
    """The method's hyper-parameters with logging that only feeds figures switched off."""
    hp = dict(hparams)
    if method.startswith("dirac-"):
        hp.update(lpips_every=0, posterior_images=0)
    hp.pop("trajectory", None)  # DPS/DDRM/DiffPIR: no trajectory settings
    return hp


def run_one(spec: dict, device: torch.device, threads: int) -> dict:
    """Reconstruct with one method in this process and measure it (the `method-run` subcommand)."""
    from diracbench.methods import load_method
    from diracbench.methods.base import RunContext, load_problem_and_recorder
    from diracbench.sample import read_tuned

    settings = spec["settings"]
    method = spec["method"]
    problem, recorder = load_problem_and_recorder(spec["operator"], spec["measurements"], "test", device, spec["max_images"])
    hparams = quiet_hparams(method, {**settings.get("hparams", {}), **read_tuned(spec.get("tuned"), settings.get("hparams", {}))})
    # No recorder: nothing is logged along the way, the run costs what a reconstruction costs.
    ctx = RunContext(device=device, threads=threads, seed=int(settings.get("seed", 0)), inputs={k: Path(v) for k, v in spec["inputs"].items()})
    module = load_method(method)
    start_rss = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with NetworkCounter() as counter:
        start = time.perf_counter()
        # A one-candidate grid is the method's run without trajectory logging (scico methods log
        # their trajectory only in `reconstruct`).
        if hasattr(module, "reconstruct_grid"):
            recon = module.reconstruct_grid(problem, [hparams], ctx)[0]
        else:
            recon = module.reconstruct(problem, hparams, ctx)
        synchronize(device)
        wall = time.perf_counter() - start
    n = len(problem)
    x = recorder.x.detach().cpu().clamp(0, 1).numpy()
    counts = counter.summary()
    jax = method_spec(method).env == "scico"
    note = ""
    if jax and method == "pnp-admm":
        note = "DnCNN runs in JAX (jit): torch hooks cannot see it; one DnCNN pass per ADMM iteration (nfe)"
    elif jax:
        note = "no network"
    return {
        "method": method,
        "n_images": n,
        "batch_size": min(int(hparams.get("batch_size", n)), n),
        "nfe": float(np.mean(recon.nfe)),
        "forward_per_image": math.nan if method == "pnp-admm" else counts["forward_images"] / n,
        "backward_per_image": math.nan if method == "pnp-admm" else counts["backward_images"] / n,
        "seconds_per_image": float(np.mean(recon.seconds)),
        "wall_per_image": wall / n,
        "peak_rss_mb": peak_rss_mb(),
        "start_rss_mb": start_rss,
        "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan,
        "bench_psnr": float(np.mean(psnr(recon.x_hat, x))),
        "networks": counts["networks"],
        "device": str(device),
        "note": note,
    }


def read_quality(path: Path) -> dict:
    """Test PSNR/LPIPS (means over the method's scored images) and the default run's s/image."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; run the default pipeline (snakemake --cores all) before the bench")
    table = pd.read_csv(path)
    means = dict(zip(table["metric"], table["mean"]))
    counts = dict(zip(table["metric"], table["n"]))
    return {
        "psnr": float(means.get("psnr", math.nan)),
        "lpips": float(means.get("lpips", math.nan)),
        "quality_n": int(counts.get("psnr", 0)),
        "default_run_seconds_per_image": float(means.get("seconds", math.nan)),
    }


def paired_quality(per_image: dict[str, Path]) -> dict[str, dict]:
    """Test PSNR/LPIPS of each method over the images that every method of the task scored.

    DPS scores a subset of the test set (its cost); comparing its mean with other methods' means
    over all images would compare different images. Keys of `per_image` are method names; images
    are matched by name.
    """
    tables = {}
    for method, path in per_image.items():
        if not Path(path).is_file():
            raise UserError(f"{path} does not exist; run the default pipeline (snakemake --cores all) before the bench")
        tables[method] = pd.read_csv(path)
    common = set.intersection(*(set(t["name"]) for t in tables.values())) if tables else set()
    out = {}
    for method, table in tables.items():
        rows = table[table["name"].isin(common)]
        out[method] = {"paired_psnr": float(rows["psnr"].mean()) if len(rows) else math.nan,
                       "paired_lpips": float(rows["lpips"].mean()) if len(rows) else math.nan,
                       "paired_n": len(rows)}
    return out


def run_all(jobs: list[dict], max_images: int | None, threads: int, device: str, workdir: Path) -> pd.DataFrame:
    """One subprocess per job, one after another; returns the cost table."""
    rows = []
    for k, job in enumerate(jobs):
        spec = {**job, "max_images": max_images}
        spec_path = workdir / f"spec{k}.json"
        out_path = workdir / f"out{k}.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "diracbench.bench", "method-run", "--spec", str(spec_path), "--out", str(out_path), "--threads", str(threads), "--device", device]
        label = f"{job['dataset']}/{job['task']}/{job['method']}"
        print(f"bench methods: {label} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"bench run of {label} failed (exit {proc.returncode}): {tail[0]}")
        result = json.loads(out_path.read_text())
        result.update(dataset=job["dataset"], task=job["task"], **read_quality(Path(job["aggregate"])))
        print(f"bench methods: {label}: {result['seconds_per_image']:.4f} s/image, nfe {result['nfe']:g}, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
        rows.append(result)
    for dataset, task in dict.fromkeys((job["dataset"], job["task"]) for job in jobs):
        paired = paired_quality({job["method"]: Path(job["per_image"]) for job in jobs if (job["dataset"], job["task"]) == (dataset, task)})
        for row in rows:
            if (row["dataset"], row["task"]) == (dataset, task):
                row.update(paired[row["method"]])
    return pd.DataFrame(rows, columns=COLUMNS)


def collect_jobs(settings: dict, inputs: dict[str, Path]) -> list[dict]:
    """Jobs from --settings {jobs: [{dataset, task, method, settings, tuned_key}]} and inputs
    named `<dataset>:<task>:<method>:<name>` (operator, measurements, tuned, aggregate, per_image, and the
    method's own inputs such as prior or model-dt1)."""
    jobs = []
    for job in settings.get("jobs", []):
        for key in ("dataset", "task", "method", "settings"):
            if key not in job:
                raise UserError(f"bench methods: a job in --settings lacks {key!r}")
        prefix = f"{job['dataset']}:{job['task']}:{job['method']}:"
        own = {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}
        for name in ("operator", "measurements", "aggregate", "per_image"):
            if name not in own:
                raise UserError(f"bench methods: --input {prefix}{name}=PATH is missing")
        tuned = own.pop("tuned", None)
        if tuned is not None and job.get("tuned_key"):
            tuned = f"{tuned}:{job['tuned_key']}"
        jobs.append({
            "dataset": job["dataset"], "task": job["task"], "method": job["method"], "settings": job["settings"],
            "operator": str(own.pop("operator")), "measurements": str(own.pop("measurements")),
            "aggregate": str(own.pop("aggregate")), "per_image": str(own.pop("per_image")), "tuned": None if tuned is None else str(tuned),
            "inputs": {k: str(v) for k, v in own.items()},
        })
    if not jobs:
        raise UserError("bench methods: --settings names no jobs")
    return jobs


def main_methods(settings: dict, inputs: dict[str, Path], out: Path, threads: int, device: torch.device) -> pd.DataFrame:
    from diracbench.io import atomic_path
    from diracbench.provenance import write_provenance

    jobs = collect_jobs(settings, inputs)
    load_before = machine_info(device)
    with tempfile.TemporaryDirectory(prefix="diracbench-bench-") as tmp:
        table = run_all(jobs, settings.get("max_images"), threads, str(device), Path(tmp))
    with atomic_path(out) as tmp_path:
        table.to_csv(tmp_path, index=False)
    write_provenance(out, "bench_methods", settings, device=str(device), extra={"machine": load_before, "load_average_after": machine_info(device)["load_average_1min"]})
    return table
