"""`python -m diracbench.metrics`: per-image and aggregate test metrics of one method.

Reads <task-dir>/measurements/test.npz, <task-dir>/operator.json and the method's
recon/test.npz (or, for the reference method `y`, the measurement itself), and writes
<out-dir>/per_image.csv (one row per image: psnr, ssim, lpips, dc, dc_ratio, nfe, seconds) and
<out-dir>/aggregate.csv (one row per metric: n, mean, bootstrap CI, and a note on the protocol;
FD-VGG and FID are set-level, without a CI).

Images are scored one batch of `batch_size` at a time and every finished batch is kept in a
partial folder (`--partial`, default `.per_image.csv.partial/` in the output folder), so a killed
job resumes. For paper-size test sets the work can be split (see `metrics.shards`):

    python -m diracbench.metrics ... --shard K/N --out-shard metrics/shards/K-of-N.npz    # N jobs
    python -m diracbench.metrics --settings ... --shards metrics/shards/*-of-N.npz --out-dir metrics

The gather writes exactly the per_image.csv and aggregate.csv of an unsharded run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from diracbench import cli
from diracbench.errors import UserError

REQUIRED = ("dataset", "task", "method", "seed", "lpips_net", "lpips_upsample_below", "fid", "bootstrap_resamples", "ci_level", "batch_size")


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.metrics", __doc__.splitlines()[0])
    parser.add_argument("--task-dir", type=Path, help="results/<dataset>/<task> (measurements/test.npz, operator.json); not with --shards")
    parser.add_argument("--recon", type=Path, help="the method's recon/test.npz (omit for the reference method 'y')")
    parser.add_argument("--out-dir", type=Path, help="results/<dataset>/<task>/<method>/metrics (per_image.csv, aggregate.csv)")
    parser.add_argument("--shard", default=None, metavar="K/N", help="score only shard K (0-based) of N, a contiguous run of whole scoring batches, into --out-shard")
    parser.add_argument("--out-shard", type=Path, default=None, help="the shard file (.npz) of --shard, read by --shards")
    parser.add_argument("--shards", nargs="+", type=Path, default=None, metavar="FILE", help="gather: the shard files of all N shards -> --out-dir")
    parser.add_argument("--partial", type=Path, default=None, help="folder of finished batches for resuming (default: .<output>.partial beside the output)")
    args = parser.parse_args(argv)
    s = args.settings
    missing = [k for k in REQUIRED if k not in s]
    if missing:
        raise UserError(f"--settings lacks {missing}")
    if args.shards is not None:
        if args.out_dir is None or args.shard is not None or args.out_shard is not None:
            raise UserError("--shards gathers shard files into --out-dir; give neither --shard nor --out-shard with it")
        return _gather(args.shards, args.out_dir, s)
    if args.task_dir is None:
        raise UserError("--task-dir is required (except when gathering with --shards)")
    if (args.shard is None) != (args.out_shard is None):
        raise UserError("--shard K/N and --out-shard FILE go together")
    if args.shard is None and args.out_dir is None:
        raise UserError("--out-dir is required (or --shard K/N with --out-shard FILE)")
    if args.shard is not None and args.out_dir is not None:
        raise UserError("with --shard, write the shard file (--out-shard) and gather the shards into --out-dir with --shards")

    from diracbench.metrics.evaluate import REFERENCE_METHOD, _take, finish_scores, join_scores, match_names, metric_batches, read_measurements, read_recon, reference_recon, score_images
    from diracbench.metrics.shards import arrays_to_scores, file_digest, scores_to_arrays, shard_file_arrays
    from diracbench.operators import family_from_spec, load_operator_spec
    from diracbench.runtime import configure_threads, resolve_device
    from diracbench.sharding import PartialDir, default_partial_dir, parse_shard, run_key, save_piece

    configure_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    meas = read_measurements(args.task_dir / "measurements" / "test.npz")
    spec = load_operator_spec(args.task_dir / "operator.json")
    operator = family_from_spec(spec).measurement_operator()
    if s["method"] == REFERENCE_METHOD:
        recon, source = reference_recon(meas), meas.path
    else:
        if args.recon is None:
            raise UserError(f"--recon is required for method {s['method']!r}")
        recon, source = read_recon(args.recon, s["method"], meas), args.recon
    idx = match_names(recon.names, meas.names, source)
    batches = metric_batches(len(recon.names), s["batch_size"])
    shard = parse_shard(args.shard) if args.shard else None
    if shard is not None:
        per = -(-len(batches) // shard[1])
        batches = batches[shard[0] * per : (shard[0] + 1) * per]
    first = batches[0].start if batches else len(recon.names)
    last = batches[-1].stop if batches else first
    output = args.out_shard if shard is not None else args.out_dir / "per_image.csv"
    inputs = [source, args.task_dir / "operator.json", meas.path]
    key = run_key({"stage": "metrics", "settings": s, "images": [first, last], "batch_size": s["batch_size"]}, inputs)
    partial = PartialDir(args.partial or default_partial_dir(output), key)
    parts, resumed = [], 0
    cache: dict = {}  # the networks (LPIPS, VGG) are built once, not once per batch
    for i, sl in enumerate(batches):
        name = f"batch-{sl.start:09d}"
        piece = partial.load(name)
        if piece is None:
            piece = scores_to_arrays(score_images(_take(recon, sl), meas, idx[sl], operator, float(spec["sigma_1"]), s, device, cache))
            partial.save(name, piece)
        else:
            resumed += 1
        parts.append(arrays_to_scores(piece))
    if shard is not None:
        joined = join_scores(parts) if parts else None
        save_piece(args.out_shard, shard_file_arrays(joined, first, last, len(recon.names), s, file_digest(source, args.task_dir / "operator.json")))
        partial.remove()
        print(f"{s['dataset']}/{s['task']}/{s['method']}: scored images {first}:{last} of {len(recon.names)} (shard {args.shard}, {len(batches)} batches, {resumed} reused) in {time.perf_counter() - start:.1f}s", flush=True)
        return
    per_image, set_values, notes = finish_scores(join_scores(parts), s)
    _write(per_image, set_values, notes, s, args.out_dir)
    partial.remove()
    _provenance(args.out_dir, s, device, {"inputs": {"recon": str(source), "measurements": str(meas.path)}, "seconds": time.perf_counter() - start, "resumed_batches": resumed})


def _gather(paths: list[Path], out_dir: Path, s: dict) -> None:
    from diracbench.metrics.evaluate import finish_scores
    from diracbench.metrics.shards import gather_scores

    start = time.perf_counter()
    scores, ordered = gather_scores(paths, s)
    per_image, set_values, notes = finish_scores(scores, s)
    _write(per_image, set_values, notes, s, out_dir)
    _provenance(out_dir, s, None, {"shards": [str(p) for p in ordered], "seconds": time.perf_counter() - start})


def _write(per_image, set_values: dict, notes: dict, s: dict, out_dir: Path) -> None:
    import numpy as np

    from diracbench.io import OutputSet
    from diracbench.metrics.evaluate import aggregate

    agg = aggregate(per_image, set_values, int(s["bootstrap_resamples"]), float(s["ci_level"]), int(s["seed"]), notes)
    with OutputSet() as out:
        per_image.to_csv(out.path(out_dir / "per_image.csv"), index=False, float_format="%.8g")
        agg.to_csv(out.path(out_dir / "aggregate.csv"), index=False, float_format="%.8g")
    means = agg.set_index("metric")["mean"]
    print(
        f"{s['dataset']}/{s['task']}/{s['method']}: n={len(per_image)} PSNR {means['psnr']:.2f} SSIM {means['ssim']:.4f} "
        f"LPIPS {means['lpips']:.4f} FD-VGG {means['fd_vgg']:.4g} FID {means['fid']:.4g} DC/sigma^2 {means['dc_ratio']:.3f}",
        flush=True,
    )
    for metric, (value, note) in set_values.items():
        if not np.isfinite(value):
            print(f"{metric}: {note}", flush=True)


def _provenance(out_dir: Path, s: dict, device, extra: dict) -> None:
    from diracbench.provenance import write_provenance
    from diracbench.runtime import device_description

    write_provenance(out_dir / "per_image.csv", "metrics", s, device=device_description(device) if device is not None else "none (gathered from shard files)", seeds=int(s["seed"]), extra=extra)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.metrics")
