"""`python -m diracbench.plan`: the resource plan of a configuration, as CSV and Markdown.

    python -m diracbench.plan --config workflow/presets/paper-ffhq.yaml --out-csv plan.csv --out-md plan.md
    python -m diracbench.plan --config config.yaml --config my-site.yaml      # later files override (cluster: ...)
    python -m diracbench.plan --settings '<the whole config as JSON>' ...     # what the `plan` rule passes

Jobs that cannot fit the walltime are listed with "DOES NOT FIT" and the setting to change, and
the command exits with status 2 after writing the files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from diracbench import cli
from diracbench.errors import UserError
from diracbench.io import OutputSet, read_yaml
from diracbench.plan import cluster_settings, plan, summary
from diracbench.plan.jobs import Job
from diracbench.textables import markdown_table

CSV_COLUMNS = ["job", "rule", "dataset", "task", "tag", "device", "threads", "network", "params", "gflop_per_image_nfe", "act_mib_per_image", "peak_mib_per_image", "fixed_mib", "nfe_per_image", "images",
               "batch_size", "micro_batch", "memory_gib", "tflop", "hours", "batches", "shards", "walltime_min", "restarts", "host_mem_mb", "processes", "note"]


def merge(base: dict, update: dict) -> dict:
    """Deep merge for mappings (a later config file overrides single keys of an earlier one)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fmt(v: float, digits: int = 1) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}" if abs(v) >= 0.1 else f"{v:.2g}"


def to_csv(jobs: list[Job]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for job in jobs:
        row = job.row()
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_COLUMNS})
    return buf.getvalue()


def to_markdown(jobs: list[Job], config: dict, title: str) -> str:
    cluster = cluster_settings(config)
    s = summary(jobs)
    device = f"{cluster['name']} ({cluster['memory_gib']:g} GiB, {cluster['tflops_bf16']:g} TFLOP/s bf16, {cluster['tflops_fp32']:g} TFLOP/s fp32 sustained)" if cluster["device"] == "gpu" else f"{cluster['name']} (CPU: {cluster['tflops_fp32'] * 1e3:g} GFLOP/s for a GPU rule's 2 threads, {cluster['memory_gib']:g} GiB)"
    lines = [
        f"**Resource plan: {title}.** {device}; CPU jobs at {cluster['cpu_gflops_per_thread']:g} GFLOP/s per thread; walltime = hours x {cluster['walltime_margin']:g} + {cluster['startup_min']:g} min, at most {cluster['max_walltime_min']:g} min per job.",
        "",
        f"Summary: **{s['jobs']} jobs** (shards counted), **{s['gpu_hours']:.1f} GPU-hours** + {s['cpu_core_hours']:.1f} CPU core-hours; longest job {s['longest_job']} ({s['longest_hours']:.1f} device-hours{'' if s['longest_walltime_segments'] == 1 else ', ' + str(s['longest_walltime_segments']) + ' walltime segments'}); peak device memory {s['peak_memory_gib']:.1f} GiB ({s['peak_memory_job']}).",
        "",
    ]
    header = ["job", "device", "network", "params (M)", "GFLOP / image / NFE", "act. MiB / image", "NFE / image", "images", "batch", "fits", "memory GiB", "hours", "shards",
              "walltime h (per shard)", "note"]
    rows = []
    for j in jobs:
        wall = f"{j.walltime_min / 60:.1f}" + (f" (+{j.restarts} resumes)" if j.restarts else "")
        rows.append([j.name, f"{j.device}{'' if j.device == 'gpu' else f' x{j.threads}'}", j.network or "-", _fmt(j.params / 1e6, 2) if j.params else "-", _fmt(j.gflop_per_image_nfe),
                     _fmt(j.act_mib_per_image) if j.act_mib_per_image else "-", _fmt(j.nfe_per_image), f"{j.images:,}", j.batch_size or "-", j.micro_batch or "-",
                     _fmt(j.memory_gib) if j.memory_gib else "-", _fmt(j.hours, 2), j.shards, wall, j.note])
    lines += markdown_table(header, rows, "lll" + "r" * 11 + "l")
    lines += ["", "GFLOP / image / NFE counts the forward pass, plus the backward pass where the job needs one (training: weights and input; DPS and guided Dirac: input only). "
              "act. MiB / image: bytes saved for backward per image. fits: the largest batch whose planned peak memory fits the device (capped at the configured batch). "
              "Hours are device-hours for GPU jobs and wall hours on the listed threads for CPU jobs."]
    return "\n".join(lines) + "\n"


def with_method_defaults(config: dict) -> dict:
    """The config with every configured method's section filled from its registry entry, as the
    workflow sees it (a method section is optional in a config file)."""
    from diracbench.methods.registry import spec

    sections = {spec(m).section: spec(m).settings(config) for m in config.get("methods", [])}
    return {**config, **sections}


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.plan", __doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=[], type=Path, help="config YAML (repeatable; later files override keys of earlier ones)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--out-csv", type=Path, default=None)
    parser.add_argument("--out-md", type=Path, default=None)
    args = parser.parse_args(argv)
    config: dict = dict(args.settings)
    for path in args.config:
        config = merge(config, read_yaml(path, producer="you (a config file)"))
    if not config.get("datasets"):
        raise UserError("no configuration: pass --config config.yaml (or --settings with the whole config)")
    config = with_method_defaults(config)
    jobs = plan(config, strict=False)
    title = args.title or (", ".join(str(p) for p in args.config) if args.config else "the workflow's config")
    md = to_markdown(jobs, config, title)
    with OutputSet() as out:
        if args.out_csv:
            out.write_text(args.out_csv, to_csv(jobs))
        if args.out_md:
            out.write_text(args.out_md, md)
    print(md, flush=True)
    bad = [j for j in jobs if "DOES NOT FIT" in j.note]
    if bad:
        raise UserError(bad[0].note.split("DOES NOT FIT: ", 1)[1])


if __name__ == "__main__":
    cli.run(main, stage="diracbench.plan")
