"""`python -m diracbench.tune --method M`: choose a method's hyper-parameters on the val split.

Grid search over the cartesian product of the configured grid (methods may evaluate the whole
grid in one batched run via `reconstruct_grid`; methods with their own tuning logic provide
`tune`). The objective follows the paper: LPIPS for deblurring and a distribution distance for
inpainting — here FD-VGG (`fd_vgg`, Fréchet distance of VGG16 features), because FID's Inception
weights cannot be assumed offline. Objectives and their directions come from the metric registry. Writes `chosen.yaml` (the chosen values, read by the test-set rule)
and `grid.csv` (every grid point with its scores).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from diracbench import cli
from diracbench.errors import UserError
from diracbench.io import OutputSet
from diracbench.methods import load_method
from diracbench.methods.base import Problem, Reconstruction, Recorder, RunContext, load_problem_and_recorder
from diracbench.metrics.registry import better, resolve_objective
from diracbench.provenance import write_provenance
from diracbench.runtime import configure_threads, device_description, resolve_device


def grid_points(grid: dict[str, list]) -> list[dict]:
    if not grid:
        return [{}]
    keys = sorted(grid)
    for k in keys:
        if not isinstance(grid[k], list) or not grid[k]:
            raise UserError(f"tuning grid entry {k!r} must be a non-empty list of values")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def score(recon: Reconstruction, recorder: Recorder, lpips_settings: dict, need_fd: bool) -> dict[str, float]:
    """One grid point's reconstructions against the clean val images the recorder holds."""
    from diracbench.metrics.image_quality import psnr
    from diracbench.metrics.perceptual import VGGFeatures, frechet_distance

    x_hat = torch.from_numpy(recon.x_hat).to(recorder.device)
    x = recorder.x.clamp(0, 1)
    out = {
        "psnr": float(psnr(x_hat, x).mean()),
        "lpips": float(recorder.lpips_to_clean(lpips_settings, x_hat, np.arange(len(recorder))).mean()),
        "seconds_per_image": float(recon.seconds.mean()),
        "nfe": float(recon.nfe.mean()),
    }
    if need_fd:
        feats = VGGFeatures(device=x.device)
        out["fd_vgg"] = float(frechet_distance(feats(x_hat).cpu().numpy(), feats(x).cpu().numpy()))
    return out


def grid_candidates(settings: dict, task: str) -> tuple[list[dict], list[dict], str]:
    """(grid points, candidate hyper-parameters = fixed values + point, objective)."""
    points = grid_points(settings.get("grid", {}))
    fixed = settings.get("hparams", {})
    objective = resolve_objective(settings.get("objective", "auto"), task)
    return points, [{**fixed, **p} for p in points], objective


def choose(points: list[dict], recons: list[Reconstruction], recorder: Recorder, settings: dict, objective: str) -> tuple[dict, pd.DataFrame]:
    """Score every grid point's reconstructions and pick the best by the objective."""
    rows = []
    for point, recon in zip(points, recons):
        rows.append({**{f"param_{k}": v for k, v in point.items()}, **score(recon, recorder, settings["lpips"], objective == "fd_vgg")})
    table = pd.DataFrame(rows)
    values = table[objective].to_numpy()
    best = int(np.nanargmin(values) if better(objective) == "min" else np.nanargmax(values))
    table["objective"] = objective
    table["chosen"] = False
    table.loc[best, "chosen"] = True
    return points[best], table


def grid_search(method, problem: Problem, recorder: Recorder, settings: dict, ctx: RunContext) -> tuple[dict, pd.DataFrame]:
    """Reconstruct every grid point (no trajectories: `ctx` holds no recorder) and choose."""
    points, candidates, objective = grid_candidates(settings, problem.task)
    if hasattr(method, "reconstruct_grid"):
        recons = method.reconstruct_grid(problem, candidates, ctx)
    else:
        recons = [method.reconstruct(problem, c, ctx) for c in candidates]
    return choose(points, recons, recorder, settings, objective)


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.tune", __doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--operator", required=True, type=Path)
    parser.add_argument("--measurements", required=True, type=Path, help="the val split's measurements")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--out-chosen", type=Path, help="chosen.yaml (required unless --shard)")
    parser.add_argument("--out-grid", type=Path, help="grid.csv (required unless --shard)")
    parser.add_argument("--out-trajectory", type=Path, default=None, help="for methods whose tuning records a trajectory (Dirac)")
    parser.add_argument("--shard", default=None, metavar="K/N", help="reconstruct only shard K (0-based) of N of the grid's sampler batches into --out-shard (see diracbench.tune_shards)")
    parser.add_argument("--out-shard", type=Path, default=None, help="the shard file (.npz) of --shard")
    parser.add_argument("--shards", nargs="+", type=Path, default=None, metavar="FILE", help="gather: score the reconstructions of all N shard files and write --out-chosen/--out-grid")
    parser.add_argument("--partial", type=Path, default=None, help="with --shard: folder of finished batches for resuming (default: .<out-shard>.partial)")
    args = parser.parse_args(argv)
    if (args.shard is None) != (args.out_shard is None):
        raise UserError("--shard K/N and --out-shard FILE go together")
    if args.shard is not None and (args.shards is not None or args.out_chosen or args.out_grid):
        raise UserError("with --shard, write the shard file (--out-shard) and gather all shards with --shards FILE... --out-chosen --out-grid")
    if args.shard is None and (args.out_chosen is None or args.out_grid is None):
        raise UserError("--out-chosen and --out-grid are required (except with --shard)")
    configure_threads(args.threads)
    device = resolve_device(args.device)
    s = args.settings
    method = load_method(args.method)
    problem, recorder = load_problem_and_recorder(args.operator, args.measurements, "val", device, s.get("max_images"))
    # Grid points are scored here, on their outputs; only a method's own tuning scores its path.
    ctx = RunContext(device=device, threads=args.threads, seed=int(s.get("seed", 0)), inputs=cli.parse_inputs(args.input))
    start = time.perf_counter()
    trajectory = None
    if args.shard is not None or args.shards is not None:
        if args.out_trajectory is not None:
            raise UserError("--out-trajectory is for methods that tune themselves, which are not sharded")
        done = _sharded(args, method, problem, recorder, s, ctx)
        if done is None:
            return
        chosen, table = done
    elif hasattr(method, "tune"):
        result = method.tune(problem, s, replace(ctx, recorder=recorder))
        chosen, table, trajectory = result.chosen, result.grid, result.trajectory
    else:
        chosen, table = grid_search(method, problem, recorder, s, ctx)
    with OutputSet() as out:
        out.write_yaml(args.out_chosen, chosen)
        table.to_csv(out.path(args.out_grid), index=False)
        if args.out_trajectory is not None:
            if trajectory is None:
                raise RuntimeError(f"{args.method} tuning produced no trajectory but --out-trajectory was given")
            trajectory.to_csv(out.path(args.out_trajectory), index=False)
    extra = {"seconds": time.perf_counter() - start, "n_images": len(problem)} | ({"shards": [str(p) for p in args.shards]} if args.shards else {})
    write_provenance(args.out_chosen, f"tune_{args.method}", s, device=device_description(device), seeds=ctx.seed, extra=extra)
    print(f"{args.method}: chose {chosen} on {len(problem)} val images", flush=True)


def _sharded(args, method, problem: Problem, recorder: Recorder, s: dict, ctx: RunContext) -> tuple[dict, pd.DataFrame] | None:
    """--shard: reconstruct this shard's batches into its file (None); --shards: gather and choose."""
    from diracbench import tune_shards
    from diracbench.sharding import PartialDir, default_partial_dir, parse_shard, run_key, save_piece

    points, candidates, objective = grid_candidates(s, problem.task)
    units = tune_shards.grid_units(method, args.method, len(problem), candidates)
    # What a shard's reconstructions depend on; the gather checks that all shards agree with it.
    description = {"method": args.method, "settings": s, "names": problem.names, "units": len(units)}
    if args.shards is not None:
        recons = tune_shards.gather(args.shards, description, len(candidates), len(problem))
        return choose(points, recons, recorder, s, objective)
    k, n = parse_shard(args.shard)
    mine = tune_shards.shard_units(units, k, n)
    first = mine[0].index if mine else len(units)
    last = mine[-1].index + 1 if mine else first
    files = [args.operator, args.measurements, *ctx.inputs.values()]
    partial = PartialDir(args.partial or default_partial_dir(args.out_shard), run_key({"stage": "tune", **description, "shard": [first, last]}, files))
    tic, pieces, resumed = time.perf_counter(), [], 0
    for unit in mine:
        name = f"batch-{unit.index:06d}"
        piece = partial.load(name)
        if piece is None:
            piece = tune_shards.run_unit(method, problem, candidates, unit, ctx)
            partial.save(name, piece)
        else:
            resumed += 1
        pieces.append(piece)
    save_piece(args.out_shard, tune_shards.shard_file_arrays(pieces, first, last, len(units), description))
    partial.remove()
    print(f"{args.method}: tuning batches {first}:{last} of {len(units)} (shard {args.shard}) in {time.perf_counter() - tic:.1f}s, {resumed} finished batches reused", flush=True)
    return None


if __name__ == "__main__":
    cli.run(main, stage="diracbench.tune")
