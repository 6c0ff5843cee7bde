"""results/bench/summary.md and the README's Cost block, generated from the bench CSVs only.

Every number comes from a CSV the bench wrote; the machine it was measured on comes from the
provenance record beside each CSV (CPU model, usable cores, torch version and threads, GPU, date,
load average), so a table never travels without the conditions it was measured under.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diracbench.methods.registry import display_name
from diracbench.bench.pipeline import median_dry_run, run_span, stage_summary
from diracbench.errors import UserError
from diracbench.provenance import provenance_path
from diracbench.textables import markdown_table

BEGIN = "<!-- COST:BEGIN"
END = "<!-- COST:END -->"
TARGET_KEYS = ("end_to_end_min", "dps_over_dirac_po", "sampling_speedup", "loss_speedup", "dry_run_s")


@dataclass
class BenchTables:
    methods: pd.DataFrame
    batching: pd.DataFrame
    dry_run: pd.DataFrame
    stages: pd.DataFrame
    machines: dict[str, dict]  # csv stem -> machine record of its provenance

    @classmethod
    def read(cls, bench_dir: Path) -> "BenchTables":
        frames = {}
        machines = {}
        for stem in ("methods", "batching", "pipeline", "stages"):
            path = bench_dir / f"{stem}.csv"
            if not path.is_file():
                raise UserError(f"{path} does not exist; run `snakemake --cores all bench` first")
            frames[stem] = pd.read_csv(path)
            prov = provenance_path(path)
            if prov.is_file():
                record = json.loads(prov.read_text())
                if "machine" in record:
                    machines[stem] = {**record["machine"], "load_average_after": record.get("load_average_after")}
        return cls(frames["methods"], frames["batching"], frames["pipeline"], frames["stages"], machines)


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def machine_line(machine: dict | None) -> str:
    if not machine:
        return "machine not recorded"
    gpu = machine.get("gpu") or "no GPU"
    load = machine.get("load_average_1min")
    after = machine.get("load_average_after")
    load_text = f"1-min load average {_num(load)} at the start, {_num(after)} at the end" if load is not None else "load average unknown"
    return (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} usable cores ({machine.get('logical_cpus', '?')} logical), "
            f"{gpu}, torch {machine.get('torch', '?')} with {machine.get('torch_threads', '?')} threads, "
            f"{machine.get('date', '?')}; {load_text}")


def machines_text(tables: BenchTables) -> str:
    lines = []
    seen = {}
    for stem, machine in tables.machines.items():
        key = (machine.get("cpu"), machine.get("cores"), machine.get("torch"), machine.get("gpu"))
        seen.setdefault(key, []).append((stem, machine))
    if not seen:
        return "Measured on: machine not recorded."
    if len(seen) == 1:
        (entries,) = seen.values()
        stem, machine = entries[0]
        return f"Measured on: {machine_line(machine)}."
    for entries in seen.values():
        for stem, machine in entries:
            lines.append(f"- `{stem}.csv` measured on: {machine_line(machine)}")
    return "Measured on different machines:\n" + "\n".join(lines)


def _passes(row) -> str:
    fwd, bwd = row["forward_per_image"], row["backward_per_image"]
    if isinstance(fwd, float) and math.isnan(fwd):
        return "n/a (JAX)"
    return f"{_num(fwd)} + {_num(bwd)}"


def cost_table(methods: pd.DataFrame) -> str:
    header = ["Dataset", "Task", "Method", "NFE", "Network passes / image (fwd + bwd)", "s / image (batch)", "Peak RSS (MB)", "Test PSNR (n)", "Test LPIPS",
              "PSNR, common images (n)", "LPIPS, common images"]
    rows = [[r["dataset"], r["task"], display_name(r["method"]), _num(r["nfe"]), _passes(r), f"{_num(r['seconds_per_image'])} ({int(r['batch_size'])})",
             _num(r["peak_rss_mb"]), f"{_num(r['psnr'], 4)} ({_count(r['quality_n'])})", _num(r["lpips"]),
             f"{_num(r['paired_psnr'], 4)} ({_count(r['paired_n'])})", _num(r["paired_lpips"])] for _, r in methods.iterrows()]
    return "\n".join(markdown_table(header, rows, "lll" + "r" * 8))


def _count(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def dps_ratios(methods: pd.DataFrame) -> list[dict]:
    """Per dataset and task: DPS seconds per image / Dirac-PO seconds per image, and both LPIPS."""
    out = []
    for (ds, task), group in methods.groupby(["dataset", "task"], sort=False):
        by = {r["method"]: r for _, r in group.iterrows()}
        if "dps" in by and "dirac-po" in by:
            dps, po = by["dps"], by["dirac-po"]
            out.append({"dataset": ds, "task": task, "ratio": float(dps["seconds_per_image"]) / float(po["seconds_per_image"]),
                    "default_run_ratio": float(dps["default_run_seconds_per_image"]) / float(po["default_run_seconds_per_image"]),
                        # LPIPS over the images both scored: DPS scores a subset of the test set.
                        "lpips_po": float(po["paired_lpips"]), "lpips_dps": float(dps["paired_lpips"]), "paired_n": _count(po["paired_n"]),
                        "dps_s": float(dps["seconds_per_image"]), "po_s": float(po["seconds_per_image"])})
    return out


def sampling_rows(batching: pd.DataFrame) -> list[dict]:
    out = []
    samp = batching[batching["measure"] == "sampling"]
    for (ds, task), group in samp.groupby(["dataset", "task"], sort=False):
        loop = group[group["implementation"] == "official_loop"].iloc[0]
        batched = group[group["implementation"] == "batched"].sort_values("batch_size")
        out.append({"dataset": ds, "task": task, "loop": float(loop["images_per_s"]), "steps": int(loop["steps"]), "diff": float(loop["difference"]),
                    "batched": {int(r["batch_size"]): float(r["images_per_s"]) for _, r in batched.iterrows()},
                    "speedup": {int(r["batch_size"]): float(r["speedup_vs_loop"]) for _, r in batched.iterrows()}})
    return out


def loss_rows(batching: pd.DataFrame) -> list[dict]:
    out = []
    for (ds, task), group in batching[batching["measure"].isin(["loss_step", "loss_operators"])].groupby(["dataset", "task"], sort=False):
        row = {"dataset": ds, "task": task}
        for measure in ("loss_step", "loss_operators"):
            g = group[group["measure"] == measure].set_index("implementation")
            row[measure] = {"loop_s": float(g.loc["official_loop", "median_s"]), "batched_s": float(g.loc["batched", "median_s"]),
                            "speedup": float(g.loc["batched", "speedup_vs_loop"]), "diff": float(g.loc["batched", "difference"]),
                            "batch": int(g.loc["batched", "batch_size"])}
        out.append(row)
    return out


def sampling_table(rows: list[dict]) -> str:
    sizes = sorted({b for r in rows for b in r["batched"]})
    header = ["Dataset", "Task", "Official-style loop", *(f"Batched, batch {b}" for b in sizes), f"Speed-up at batch {sizes[-1] if sizes else '?'}", "max abs diff"]
    body = [[r["dataset"], r["task"], _num(r["loop"]), *(_num(r["batched"].get(b)) for b in sizes), f"{_num(r['speedup'].get(sizes[-1]))}x", _num(r["diff"], 2)]
            for r in rows]
    return "\n".join(markdown_table(header, body, "ll" + "r" * (len(sizes) + 3)))


def loss_table(rows: list[dict]) -> str:
    header = ["Dataset", "Task", "Batch", "Loss fwd+bwd: loop s", "batched s", "speed-up", "rel. diff", "Operators only: loop s", "batched s", "speed-up", "max abs diff"]
    body = []
    for r in rows:
        a, b = r["loss_step"], r["loss_operators"]
        body.append([r["dataset"], r["task"], a["batch"], _num(a["loop_s"]), _num(a["batched_s"]), f"{_num(a['speedup'])}x", _num(a["diff"], 2),
                     _num(b["loop_s"]), _num(b["batched_s"]), f"{_num(b['speedup'])}x", _num(b["diff"], 2)])
    return "\n".join(markdown_table(header, body, "ll" + "r" * 9))


def stages_table(stages: pd.DataFrame) -> str:
    summary = stage_summary(stages)
    rows = [[r["rule"], int(r["jobs"]), _num(r["total_s"]), _num(r["max_s"]), _num(r["cpu_s"])] for _, r in summary.iterrows()]
    return "\n".join(markdown_table(["Rule", "Jobs", "Total wall s", "Longest job s", "Total CPU s"], rows, "lrrrr"))


def _verdict(value: float, limit: float, higher_is_better: bool) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    ok = value >= limit if higher_is_better else value <= limit
    if ok:
        return "met"
    if higher_is_better:
        return f"missed: {_num(value)} vs >= {_num(limit)}" + (f" ({_num(limit / value)}x short)" if value > 0 else "")
    return f"missed: {_num(value)} vs <= {_num(limit)} ({_num(value - limit)} over)"


def _lpips_verdict(po: float, dps: float) -> str:
    if math.isnan(po) or math.isnan(dps):
        return "not measured"
    return "met" if po <= dps else f"missed: Dirac-PO worse by {_num(po - dps)}"


def end_to_end(tables: BenchTables) -> tuple[float, str]:
    """Minutes of the default run, and how they were obtained.

    The span from the first job's start to the last job's end dates jobs by their benchmark files'
    modification times. `snakemake --touch`, a copy without times or a checkout rewrites those;
    then the span is shorter than the jobs' CPU time allows on this machine's cores, and the sum
    of job wall times (an upper bound for any run with parallel jobs) is used instead.
    """
    if tables.stages.empty:
        return math.nan, "no stage records"
    span = run_span(tables.stages) / 60
    total = float(tables.stages["seconds"].sum()) / 60
    cores = tables.machines.get("stages", {}).get("cores")
    cpu = float(tables.stages["cpu_time_s"].fillna(0).sum()) / 60
    if cores and span < 0.9 * cpu / float(cores):
        return total, (f"sum of job wall times {_num(total)} min (the records' span, {_num(span)} min, is shorter than their "
                       f"{_num(cpu)} CPU-minutes allow on {cores} cores: the benchmark files were touched or copied after the run)")
    return span, f"span of the stage records {_num(span)} min (sum of job wall times {_num(total)} min)"


def targets_table(tables: BenchTables, targets: dict) -> str:
    missing = [k for k in TARGET_KEYS if k not in targets]
    if missing:
        raise UserError(f"bench targets lack {missing}; set them in the config's bench.targets")
    minutes, how = end_to_end(tables)
    rows = [[f"End-to-end run of this configuration <= {_num(targets['end_to_end_min'])} min", how, _verdict(minutes, targets["end_to_end_min"], False)]]
    for r in dps_ratios(tables.methods):
        where = f"{r['dataset']}/{r['task']}"
        rows.append([f"{where}: Dirac-PO >= {_num(targets['dps_over_dirac_po'])}x less time per image than DPS", f"{_num(r['ratio'])}x ({_num(r['dps_s'])} vs {_num(r['po_s'])} s)",
                     _verdict(r["ratio"], targets["dps_over_dirac_po"], True)])
        rows.append([f"{where}: Dirac-PO LPIPS no worse than DPS", f"{_num(r['lpips_po'])} vs {_num(r['lpips_dps'])} on the {r['paired_n']} test images every method scored",
                     _lpips_verdict(r["lpips_po"], r["lpips_dps"])])
    for r in sampling_rows(tables.batching):
        top = max(r["speedup"]) if r["speedup"] else None
        value = r["speedup"].get(top, math.nan) if top else math.nan
        rows.append([f"{r['dataset']}/{r['task']}: batched sampling at batch {top} >= {_num(targets['sampling_speedup'])}x the one-image loop", f"{_num(value)}x",
                     _verdict(value, targets["sampling_speedup"], True)])
    for r in loss_rows(tables.batching):
        rows.append([f"{r['dataset']}/{r['task']}: batched loss >= {_num(targets['loss_speedup'])}x the per-sample loop",
                     f"{_num(r['loss_step']['speedup'])}x with the network, {_num(r['loss_operators']['speedup'])}x operators only",
                     _verdict(r["loss_step"]["speedup"], targets["loss_speedup"], True)])
    dry = median_dry_run(tables.dry_run)
    pending = set(tables.dry_run["jobs_pending"].dropna().astype(int)) if len(tables.dry_run) else set()
    note = "" if pending == {0} else f" (jobs pending: {sorted(pending)}: not an up-to-date workflow)"
    rows.append([f"`snakemake -n` with nothing to do <= {_num(targets['dry_run_s'])} s", f"{_num(dry)} s median of {len(tables.dry_run)}{note}",
                 _verdict(dry, targets["dry_run_s"], False)])
    return "\n".join(markdown_table(["Target", "Measured", "Verdict"], rows))


def summary_markdown(tables: BenchTables, targets: dict) -> str:
    ratios = dps_ratios(tables.methods)
    ratio_text = "; ".join(f"{r['dataset']}/{r['task']} {_num(r['ratio'])}x" for r in ratios) or "n/a (DPS or Dirac-PO not configured)"
    default_text = "; ".join(f"{r['dataset']}/{r['task']} {_num(r['default_run_ratio'])}x" for r in ratios) or "n/a"
    samp = sampling_rows(tables.batching)
    steps = samp[0]["steps"] if samp else "?"
    dry = median_dry_run(tables.dry_run)
    parts = [
        "# diracbench cost benchmark",
        "",
        "Generated by `python -m diracbench.bench summary` from results/bench/*.csv.",
        "",
        machines_text(tables),
        "",
        "## Cost at quality",
        "",
        "Each method reconstructs the first test images of each task in its own process, with its tuned hyper-parameters "
        "and configured batch size (capped by the number of images), without trajectory logging. Network passes are counted "
        "by hooks on the model; peak RSS is the process's high-water mark (torch and the method's libraries included). "
        "Test PSNR and LPIPS are the default run's means over the images each method scored (metrics/aggregate.csv); "
        "the 'common images' columns average the per-image CSVs over the test images that every method of the task scored "
        "(DPS scores a subset), and the LPIPS target below compares those.",
        "",
        cost_table(tables.methods),
        "",
        f"DPS time per image / Dirac-PO time per image, same run: {ratio_text}. "
        f"From the default run's own per-image timings (metrics/aggregate.csv, measured at its batch sizes): {default_text}.",
        "",
        "## Batched versus official-style loops",
        "",
        f"Dirac sampling throughput in images/s (trained Dirac-PO network, full reverse process with {steps} steps), against a "
        "one-image-at-a-time loop that rebuilds each operator on every call as the official code does. Max abs diff: the "
        "largest difference between batched and loop samples of the same images and seeds.",
        "",
        sampling_table(samp),
        "",
        "Incremental-reconstruction loss, one training batch: forward + backward with the network, and the operator work alone, "
        "against the official per-sample loop.",
        "",
        loss_table(loss_rows(tables.batching)),
        "",
        "## Pipeline overhead",
        "",
        f"`snakemake -n` on `all` with nothing to do: median {_num(dry)} s over {len(tables.dry_run)} runs.",
        "",
        f"Per-stage wall times from results/benchmarks; end to end: {end_to_end(tables)[1]}:",
        "",
        stages_table(tables.stages),
        "",
        "## Targets",
        "",
        targets_table(tables, targets),
        "",
    ]
    return "\n".join(parts)


def readme_block(tables: BenchTables) -> str:
    """The Markdown between the README's COST markers."""
    ratios = dps_ratios(tables.methods)
    lines = [
        machines_text(tables),
        "",
        cost_table(tables.methods),
        "",
    ]
    if ratios:
        lines.append("- DPS / Dirac-PO time per image (same run): " + "; ".join(f"{r['task']} {_num(r['ratio'])}x" for r in ratios) + ".")
    for r in sampling_rows(tables.batching):
        sizes = sorted(r["batched"])
        lines.append(f"- Dirac sampling, {r['task']}: {_num(r['loop'])} images/s one image at a time (official-style), "
                     + ", ".join(f"{_num(r['batched'][b])} batched at {b}" for b in sizes)
                     + (f" ({_num(r['speedup'][sizes[-1]])}x)." if sizes else "."))
    for r in loss_rows(tables.batching):
        a, b = r["loss_step"], r["loss_operators"]
        lines.append(f"- Training loss, {r['task']}, batch {a['batch']}: {_num(a['speedup'])}x faster than the per-sample loop "
                     f"with the network's forward and backward, {_num(b['speedup'])}x for the operators alone.")
    lines.append(f"- `snakemake -n` with nothing to do: {_num(median_dry_run(tables.dry_run))} s. "
                 f"Workflow run recorded in results/benchmarks: {end_to_end(tables)[1]}.")
    lines.append("")
    lines.append("Full tables and the targets: `results/bench/summary.md` (`snakemake --cores all bench`).")
    return "\n".join(lines)


def replace_block(text: str, body: str) -> str:
    """`text` with only the lines between the COST:BEGIN line and the COST:END marker replaced."""
    begins = [m for m in re.finditer(r"^<!-- COST:BEGIN[^\n]*-->[ \t]*$", text, flags=re.MULTILINE)]
    ends = [m.start() for m in re.finditer(re.escape(END), text)]
    if len(begins) != 1 or len(ends) != 1:
        raise UserError(f"the README needs exactly one line starting '{BEGIN}' and one '{END}' (found {len(begins)} and {len(ends)})")
    begin, end = begins[0], ends[0]
    if end < begin.end():
        raise UserError(f"'{END}' comes before '{BEGIN}' in the README")
    if BEGIN in body or END in body:
        raise ValueError("the generated block must not contain the markers")
    return text[: begin.end()] + "\n" + body.strip("\n") + "\n" + text[end:]
