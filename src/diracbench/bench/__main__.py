"""`python -m diracbench.bench <command>`: see the package docstring (diracbench/bench/__init__.py).

Examples (the `bench` target runs the first four with the paths of the default run):
    python -m diracbench.bench methods --settings @jobs.json --input photos:deblur:dps:prior=... --out results/bench/methods.csv
    python -m diracbench.bench batching --settings @batching.json --input photos:deblur:model=... --out results/bench/batching.csv
    python -m diracbench.bench pipeline --settings @config.json --snakefile Snakefile --benchmarks results/benchmarks \
        --out-dry-run results/bench/pipeline.csv --out-stages results/bench/stages.csv
    python -m diracbench.bench summary --bench-dir results/bench --settings '{"targets": {...}}' --out results/bench/summary.md
    python -m diracbench.bench readme --bench-dir results/bench --readme README.md
    python -m diracbench.bench training --settings @training.json --out results/bench/training.csv   # CPU training speed
    python -m diracbench.bench recipe --settings @recipe.json --data results/photos/data/train.npy \
        --input operator=... --input schedule=... --measurements results/photos/deblur/measurements/val.npz --out curve.csv
    python -m diracbench.bench gpu            # on a CUDA machine; --allow-cpu --tiny for a CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from diracbench import cli
from diracbench.errors import UserError


def _common(parser: argparse.ArgumentParser, settings: bool = True) -> None:
    if settings:
        parser.add_argument("--settings", type=cli.parse_settings, default={}, help="JSON object or @file.yaml with the command's parameters")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (a rule passes its `threads`)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _inputs(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--input {item!r}: expected NAME=PATH")
        if not Path(path).is_file():
            raise UserError(f"--input {name}={path}: no such file; run the rule that makes it first")
        out[name] = Path(path)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diracbench.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("methods", help="cost at quality of every configured method -> methods.csv")
    _common(p)
    p.add_argument("--input", action="append", default=[], metavar="DATASET:TASK:METHOD:NAME=PATH")
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("method-run", help="(internal) one method's measured run, in its own process")
    _common(p, settings=False)
    p.add_argument("--spec", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("batching", help="batched Dirac sampling and loss vs official-style loops -> batching.csv")
    _common(p)
    p.add_argument("--input", action="append", default=[], metavar="DATASET:TASK:NAME=PATH")
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("pipeline", help="snakemake -n with nothing to do, and per-stage wall times -> pipeline.csv, stages.csv")
    _common(p)
    p.add_argument("--snakefile", required=True, type=Path)
    p.add_argument("--workdir", type=Path, default=Path("."), help="the workflow's working directory")
    p.add_argument("--target", default="all", help="the up-to-date target to dry-run")
    p.add_argument("--snakemake-python", default=sys.executable, help="the Python whose snakemake runs the dry run (the rule passes the running Snakemake's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--benchmarks", required=True, type=Path, help="results/benchmarks")
    p.add_argument("--out-dry-run", required=True, type=Path)
    p.add_argument("--out-stages", required=True, type=Path)

    p = sub.add_parser("training", help="CPU training speed of the default's step: bf16, channels-last, threads, compile -> training.csv")
    _common(p)
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("recipe", help="val one-shot PSNR along the training of one Dirac model with a recipe -> CSV")
    _common(p)
    p.add_argument("--data", required=True, type=Path, help="results/<dataset>/data/train.npy")
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="operator=operator.json, schedule=schedule.csv")
    p.add_argument("--measurements", required=True, type=Path, help="results/<dataset>/<task>/measurements/val.npz")
    p.add_argument("--every", type=int, default=100, help="score every this many steps (and at the last)")
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("summary", help="results/bench/summary.md from the bench CSVs")
    _common(p)
    p.add_argument("--bench-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("readme", help="rewrite the README's COST block from the bench CSVs")
    p.add_argument("--bench-dir", type=Path, default=Path("results/bench"))
    p.add_argument("--readme", type=Path, default=Path("README.md"))

    p = sub.add_parser("gpu", help="training/sampling throughput of the paper-size network on a CUDA GPU")
    from diracbench.bench.gpu import add_arguments

    add_arguments(p)
    p.add_argument("--threads", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "readme":
        from diracbench.bench.report import BenchTables, readme_block, replace_block
        from diracbench.io import atomic_path

        if not args.readme.is_file():
            raise UserError(f"{args.readme} does not exist; pass --readme PATH")
        text = args.readme.read_text()
        new = replace_block(text, readme_block(BenchTables.read(args.bench_dir)))
        with atomic_path(args.readme) as tmp:
            tmp.write_text(new)
        print(f"rewrote the Cost block of {args.readme} from {args.bench_dir}", flush=True)
        return

    from diracbench.runtime import configure_threads, resolve_device

    configure_threads(args.threads)
    if args.command == "gpu":
        from diracbench.bench.gpu import run_gpu_check

        code = run_gpu_check(args)
        if code:
            raise SystemExit(code)
        return
    device = resolve_device(args.device)
    if args.command == "method-run":
        from diracbench.bench.methods import run_one
        from diracbench.io import write_json

        spec = json.loads(args.spec.read_text())
        write_json(args.out, run_one(spec, device, args.threads))
    elif args.command == "methods":
        from diracbench.bench.methods import main_methods

        main_methods(args.settings, _inputs(args.input), args.out, args.threads, device)
    elif args.command == "batching":
        from diracbench.bench.batching import main_batching

        main_batching(args.settings, _inputs(args.input), args.out, device)
    elif args.command == "pipeline":
        from diracbench.bench.pipeline import stage_times, time_dry_run
        from diracbench.io import atomic_path
        from diracbench.provenance import write_provenance
        from diracbench.bench.machine import machine_info

        machine = machine_info(device)
        if "config" not in args.settings:
            raise UserError("bench pipeline: --settings needs {config: <the workflow's configuration>}")
        dry = time_dry_run(args.snakemake_python, args.snakefile.resolve(), args.workdir.resolve(), args.settings["config"], args.target, args.repeats)
        stages = stage_times(args.benchmarks)
        with atomic_path(args.out_dry_run) as tmp:
            dry.to_csv(tmp, index=False)
        with atomic_path(args.out_stages) as tmp:
            stages.to_csv(tmp, index=False)
        for out in (args.out_dry_run, args.out_stages):
            write_provenance(out, "bench_pipeline", {"target": args.target, "repeats": args.repeats}, device=str(device), extra={"machine": machine, "load_average_after": machine_info(device)["load_average_1min"]})
        print(f"snakemake -n {args.target}: {', '.join(f'{s:.2f}s' for s in dry['seconds'])} (jobs pending {list(dry['jobs_pending'])}); {len(stages)} stage records", flush=True)
    elif args.command == "training":
        from diracbench.bench.cpu_training import format_table, run
        from diracbench.bench.machine import machine_info
        from diracbench.io import atomic_path
        from diracbench.provenance import write_provenance

        s = args.settings
        missing = [k for k in ("network", "image_size", "kernel_size", "batch_size", "steps", "warmup", "threads", "compile") if k not in s]
        if missing:
            raise UserError(f"bench training: --settings lacks {missing}")
        if device.type != "cpu":
            raise UserError("bench training measures the CPU trainer; run it with --device cpu (the GPU check is `bench gpu`)")
        table = run(s["network"], int(s["image_size"]), int(s["kernel_size"]), int(s["batch_size"]), int(s["steps"]), int(s["warmup"]), [int(t) for t in s["threads"]], bool(s["compile"]))
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        write_provenance(args.out, "bench_training", s, device="cpu", extra={"machine": machine_info(device)})
        print(format_table(table, f"Training step of the default's network, batch {s['batch_size']} at {s['image_size']} px, on this CPU (speed-up: against fp32, contiguous, {max(s['threads'])} threads)"), flush=True)
    elif args.command == "recipe":
        from diracbench.bench.recipe import run
        from diracbench.io import atomic_path
        from diracbench.provenance import write_provenance

        inputs = _inputs(args.input)
        if set(inputs) != {"operator", "schedule"}:
            raise UserError("bench recipe needs exactly --input operator=PATH and --input schedule=PATH")
        if "val" not in args.measurements.name:
            raise UserError(f"bench recipe scores the val split only; {args.measurements} is not a val.npz")
        curve = run(args.settings, args.data, inputs["operator"], inputs["schedule"], args.measurements, args.every, device)
        with atomic_path(args.out) as tmp:
            curve.to_csv(tmp, index=False)
        write_provenance(args.out, "bench_recipe", args.settings, device=str(device), seeds=args.settings["training"].get("seed"))
        print(curve.to_string(index=False), flush=True)
    elif args.command == "summary":
        from diracbench.bench.report import BenchTables, summary_markdown
        from diracbench.io import atomic_path

        if "targets" not in args.settings:
            raise UserError("bench summary: --settings needs {targets: {...}} (the config's bench.targets)")
        text = summary_markdown(BenchTables.read(args.bench_dir), args.settings["targets"])
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
        print(text, flush=True)
    else:  # argparse restricts the choices
        raise AssertionError(args.command)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.bench")
