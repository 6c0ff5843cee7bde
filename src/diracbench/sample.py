"""`python -m diracbench.sample --method M`: reconstruct a measurement set with one method.

Reads the shared measurements (never regenerates y), merges the method's fixed hyper-parameters
with the values its tuning rule chose on the val split, and writes `recon/<split>.npz`
(`x_hat` float32 N x C x H x W in [0, 1], `names`, `nfe`, `seconds` per image) together with
`trajectory.csv` (per-step, per-image log; empty for methods that have no trajectory).

The method runs one batch at a time on exactly the batches of a whole-split run, and each finished
batch is kept in a partial folder (`.<out>.partial/`, removed at the end) so that a killed run
resumes where it stopped. `--shard K/N` (or `--images START:STOP`) samples only a contiguous run
of whole batches into one shard file; `python -m diracbench.gather` joins the shards into the
same files, bit for bit (see `diracbench.sharding`).

Example:
    python -m diracbench.sample --method ddrm --settings @ddrm.yaml \
        --operator results/photos/deblur/operator.json \
        --measurements results/photos/deblur/measurements/test.npz \
        --tuned results/photos/deblur/ddrm/tuning/chosen.yaml --input prior=results/photos/prior/weights.pt \
        --out results/photos/deblur/ddrm/recon/test.npz --trajectory results/photos/deblur/ddrm/recon/trajectory.csv
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from diracbench import cli
from diracbench.contracts import check_chosen
from diracbench.errors import UserError
from diracbench.io import read_yaml
from diracbench.methods import load_method
from diracbench.methods.base import Problem, RunContext, load_problem_and_recorder
from diracbench.provenance import write_provenance
from diracbench.runtime import configure_threads, device_description, resolve_device
from diracbench.sharding import (
    Batch,
    PartialDir,
    arrays_to_extras,
    assemble,
    batch_plan,
    default_partial_dir,
    extras_to_arrays,
    frame_to_arrays,
    parse_shard,
    run_key,
    save_piece,
    shard_arrays,
    shard_batches,
    trajectory_order,
    write_outputs,
)


def read_tuned(arg: str | None, declared: dict | None = None) -> dict:
    """`FILE` or `FILE:KEY` (a sub-mapping, e.g. Dirac's `chosen.yaml:po`), checked against its grid."""
    if not arg:
        return {}
    path, _, key = arg.partition(":") if not Path(arg).is_file() else (arg, "", "")
    data = read_yaml(path, producer="the method's tuning rule")
    if key:
        if not isinstance(data, dict) or key not in data:
            raise UserError(f"{path} has no entry {key!r}; rerun the tuning rule")
        data = data[key]
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of chosen hyper-parameters; rerun the tuning rule")
    check_chosen(Path(path), data, key or None, declared)
    return data


def _batch_size(hparams: dict, method: str) -> int:
    if "batch_size" not in hparams:
        raise UserError(f"{method}: hparams lack batch_size; set it in the config's '{method}' section")
    return int(hparams["batch_size"])


def _run_batch(method, name: str, problem: Problem, batch: Batch, hparams: dict, ctx: RunContext, whole_split_extras: bool) -> dict[str, np.ndarray]:
    """One batch exactly as the unsharded run computes it, as a piece (arrays only)."""
    index = list(range(batch.start, batch.stop))
    index += [index[-1]] * (batch.size - len(index))  # a padded (scico) batch: copies of its last image
    sub = problem.select(index)
    # The batch's own recorder: the method indexes it like `sub`, from 0.
    ctx = replace(ctx, recorder=None if ctx.recorder is None else ctx.recorder.select(index))
    recon = method.reconstruct(sub, hparams, ctx, extras=False) if whole_split_extras else method.reconstruct(sub, hparams, ctx)
    real = batch.stop - batch.start
    if recon.x_hat.shape != tuple(sub.y.shape):
        raise RuntimeError(f"{name} returned {recon.x_hat.shape}, expected {tuple(sub.y.shape)}")
    traj = recon.trajectory
    if traj is not None:
        traj = traj[traj["image"] < real].copy()
        traj["image"] = traj["image"] + batch.start
        traj = traj.reset_index(drop=True)
    seconds = recon.seconds[:real] * (batch.size / real)  # a padded batch's time belongs to its real images
    piece = {"x_hat": recon.x_hat[:real], "names": np.array(problem.names[batch.start : batch.stop]), "nfe": recon.nfe[:real], "seconds": seconds}
    piece.update(frame_to_arrays(traj))
    piece.update(extras_to_arrays(recon.extras))
    return piece


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.sample", __doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--operator", required=True, type=Path)
    parser.add_argument("--measurements", required=True, type=Path)
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--tuned", default=None, help="chosen.yaml from the tuning rule, optionally FILE:KEY")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--out", required=True, type=Path, help="recon/<split>.npz, or with --shard/--images the shard's single .npz for `gather`")
    parser.add_argument("--trajectory", type=Path, default=None, help="trajectory.csv (not with --shard/--images: the shard file holds it)")
    parser.add_argument("--extra-out", action="append", default=[], metavar="NAME=PATH", help="write the method's extra output NAME (a dict of arrays) as .npz")
    parser.add_argument("--shard", default=None, metavar="K/N", help="only shard K (0-based) of N: a contiguous run of whole batches")
    parser.add_argument("--images", default=None, metavar="START:STOP", help="only images START..STOP-1 (on batch boundaries)")
    parser.add_argument("--partial", type=Path, default=None, help="folder of finished batches for resuming (default: .<out>.partial beside --out)")
    args = parser.parse_args(argv)
    sharded = args.shard is not None or args.images is not None
    if not sharded and args.trajectory is None:
        raise UserError("--trajectory is required (except with --shard/--images, whose single output file holds the trajectory)")
    if sharded and (args.trajectory is not None or args.extra_out):
        raise UserError("with --shard/--images, write one shard file (--out) and let `python -m diracbench.gather` write the trajectory and extra outputs")
    configure_threads(args.threads)
    device = resolve_device(args.device)
    s = args.settings
    method = load_method(args.method)
    extra_out = cli.parse_named_paths(args.extra_out, "--extra-out")
    problem, recorder = load_problem_and_recorder(args.operator, args.measurements, args.split, device, s.get("max_images"))
    hparams = {**s.get("hparams", {}), **read_tuned(args.tuned, s.get("hparams", {}))}
    ctx = RunContext(device=device, threads=args.threads, seed=int(s.get("seed", 0)), inputs=cli.parse_inputs(args.input), recorder=recorder)
    plan = batch_plan(args.method, len(problem), _batch_size(hparams, args.method))
    mine = shard_batches(plan, parse_shard(args.shard) if args.shard else None, args.images)
    start = mine[0].start if mine else (plan[-1].stop if plan else 0)
    stop = mine[-1].stop if mine else start
    whole_split_extras = hasattr(method, "reconstruct_extras")
    files = [args.operator, args.measurements, *ctx.inputs.values()] + ([Path(args.tuned.partition(":")[0]) if not Path(args.tuned).is_file() else Path(args.tuned)] if args.tuned else [])
    key = run_key({"method": args.method, "split": args.split, "settings": s, "hparams": hparams, "images": [start, stop], "batches": [[b.start, b.stop, b.size] for b in mine]}, files)
    partial = PartialDir(args.partial or default_partial_dir(args.out), key)
    tic = time.perf_counter()
    pieces, resumed = [], 0
    for batch in mine:
        name = f"batch-{batch.index:06d}"
        piece = partial.load(name)
        if piece is None:
            piece = _run_batch(method, args.method, problem, batch, hparams, ctx, whole_split_extras)
            partial.save(name, piece)
        else:
            resumed += 1
        pieces.append(piece)
    extras: dict = {}
    for piece in pieces:
        extras.update(arrays_to_extras(piece))
    if whole_split_extras and start == 0:
        piece = partial.load("extras")
        if piece is None:
            piece = extras_to_arrays(method.reconstruct_extras(problem, hparams, ctx))
            partial.save("extras", piece)
        extras.update(arrays_to_extras(piece))
    wall = time.perf_counter() - tic
    result = assemble(pieces, extras, tuple(problem.y.shape[1:]), trajectory_order(args.method))
    if sharded:
        save_piece(args.out, shard_arrays(result, start, stop, len(problem)))
    else:
        write_outputs(result, args.out, args.trajectory, extra_out)
    partial.remove()
    write_provenance(args.out, f"sample_{args.method}", {"settings": s, "hparams": hparams}, device=device_description(device), seeds=ctx.seed, extra={"wall_seconds": wall, "n_images": stop - start, "images": [start, stop], "resumed_batches": resumed})
    n = stop - start
    what = f"images {start}:{stop} of {len(problem)} ({len(mine)} of {len(plan)} batches)" if sharded else f"{n} images"
    print(f"{args.method}: {what} in {wall:.1f}s ({wall / max(n, 1):.3f}s/image), {resumed} finished batches reused, mean NFE {result.nfe.mean() if n else 0:.1f}", flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.sample")
