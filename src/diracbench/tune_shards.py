"""Sharded, resumable grid tuning: the grid's sampler batches split over jobs, scored at the gather.

A grid search reconstructs every (grid point, val image) pair and then scores each grid point on
all val images. The reconstructions are the cost (DPS: 1000 network evaluations with a backward
pass each), and each is a function of its sampler batch only (per-image seeds), so a shard takes
a contiguous run of whole *batches* exactly as the unsharded tune makes them:
- methods that run the whole grid as one batched job (DPS: `grid_entries`/`reconstruct_entries`)
  are cut between batches of the (grid point, image) list, even where a batch mixes grid points;
- the others (DDRM) reconstruct each grid point on its own, batch by batch (`sharding.batch_plan`),
  so their units are (grid point, batch) pairs.
Cutting by grid point would change the DPS batches, and cutting by val image the set each point
is scored on. Scoring (LPIPS, FD-VGG per grid point) needs all images of a point, so it runs at
the gather, on the reassembled reconstructions: the same arrays, hence the same scores, grid.csv
and chosen.yaml as an unsharded tune (except its wall-clock column `seconds_per_image`).
Methods that tune themselves (Dirac) or solve the whole grid in one batched solve (the scico
methods, cheap) are not sharded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diracbench.errors import UserError
from diracbench.io import read_npz
from diracbench.methods.base import Problem, Reconstruction, RunContext
from diracbench.sharding import batch_plan

SHARD_FORMAT = "diracbench-tune-shard-1"
SHARD_PRODUCER = "`python -m diracbench.tune --shard K/N`"


@dataclass(frozen=True)
class Unit:
    """One sampler batch of a grid search: its (candidate, image) entries, in sampling order."""

    index: int
    entries: tuple[tuple[int, int], ...]
    joint: bool  # True: one batched call over mixed candidates (reconstruct_entries)


def grid_units(method, name: str, n_images: int, candidates: list[dict]) -> list[Unit]:
    """The sampler batches an unsharded grid search of `method` makes, in order."""
    if hasattr(method, "tune"):
        raise UserError(f"{name} chooses its settings with its own tuning (not a grid of independent runs); run its tuning without --shard")
    if hasattr(method, "reconstruct_grid") and not hasattr(method, "grid_entries"):
        raise UserError(f"{name} solves its whole tuning grid in one batched run; run its tuning without --shard")
    entries = method.grid_entries(n_images, candidates) if hasattr(method, "grid_entries") else None
    if entries is not None:
        bs = max(1, int(candidates[0]["batch_size"]))
        return [Unit(u, tuple(entries[s : s + bs]), True) for u, s in enumerate(range(0, len(entries), bs))]
    units: list[Unit] = []
    for j, c in enumerate(candidates):
        if "batch_size" not in c:
            raise UserError(f"{name}: hparams lack batch_size; set it in the config's '{name}' section")
        for b in batch_plan(name, n_images, int(c["batch_size"])):
            if b.size != b.stop - b.start:
                raise UserError(f"{name} pads its batches; its tuning is not sharded, run it without --shard")
            units.append(Unit(len(units), tuple((j, i) for i in range(b.start, b.stop)), False))
    return units


def shard_units(units: list[Unit], k: int, n: int) -> list[Unit]:
    """Shard k of n: the k-th run of ceil(U / n) units (possibly none)."""
    per = math.ceil(len(units) / n) if units else 0
    return units[k * per : (k + 1) * per]


def run_unit(method, problem: Problem, candidates: list[dict], unit: Unit, ctx: RunContext) -> dict[str, np.ndarray]:
    """One batch exactly as the unsharded grid search computes it, as arrays."""
    if unit.joint:
        r = method.reconstruct_entries(problem, candidates, list(unit.entries), ctx)
    else:
        j = unit.entries[0][0]
        r = method.reconstruct(problem.select([i for _, i in unit.entries]), candidates[j], ctx)
    if r.x_hat.shape[0] != len(unit.entries):
        raise RuntimeError(f"a tuning batch returned {r.x_hat.shape[0]} reconstructions for {len(unit.entries)} entries")
    ent = np.array(unit.entries, dtype=np.int64).reshape(-1, 2)
    return {"candidate": ent[:, 0], "image": ent[:, 1], "x_hat": r.x_hat, "nfe": r.nfe, "seconds": r.seconds}


def shard_file_arrays(pieces: list[dict[str, np.ndarray]], first: int, last: int, total: int, description: dict) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"format": np.array(SHARD_FORMAT), "units": np.array([first, last, total], dtype=np.int64), "description": np.array(json.dumps(description, sort_keys=True, default=str))}
    if pieces:
        for key in ("candidate", "image", "x_hat", "nfe", "seconds"):
            arrays[key] = np.concatenate([p[key] for p in pieces])
    return arrays


def gather(paths: list[Path], description: dict, n_candidates: int, n_images: int) -> list[Reconstruction]:
    """One Reconstruction per candidate (images in order) from all shard files; gaps are errors."""
    want = json.dumps(description, sort_keys=True, default=str)
    shards = []
    for path in paths:
        a = read_npz(path, required=("format", "units", "description"), producer=SHARD_PRODUCER)
        if str(a["format"]) != SHARD_FORMAT:
            raise UserError(f"{path} is not a tuning shard ({SHARD_FORMAT}); rerun {SHARD_PRODUCER}")
        if str(a["description"]) != want:
            raise UserError(f"{path} was made with other settings, grid or inputs than this gather; rerun its tuning shard")
        shards.append((path, a))
    shards.sort(key=lambda item: (int(item[1]["units"][0]), int(item[1]["units"][1])))
    total = int(shards[0][1]["units"][2]) if shards else 0
    pos = 0
    for path, a in shards:
        first, last = int(a["units"][0]), int(a["units"][1])
        if first == last:
            continue
        if first != pos:
            raise UserError(f"{path} starts at tuning batch {first} but the shards before it end at {pos}: {'a tuning shard is missing' if first > pos else 'tuning shards overlap'}; rerun the missing shard")
        pos = last
    if pos != total:
        raise UserError(f"the tuning shards cover batches 0:{pos} of {total}; a shard is missing, rerun it")
    full = [a for _, a in shards if "x_hat" in a]
    cand = np.concatenate([a["candidate"] for a in full])
    image = np.concatenate([a["image"] for a in full])
    x_hat = np.concatenate([a["x_hat"] for a in full])
    nfe = np.concatenate([a["nfe"] for a in full])
    seconds = np.concatenate([a["seconds"] for a in full])
    out = []
    for j in range(n_candidates):
        rows = np.flatnonzero(cand == j)
        order = rows[np.argsort(image[rows], kind="stable")]
        if not np.array_equal(image[order], np.arange(n_images)):
            raise UserError(f"the tuning shards do not hold every val image of grid point {j}; rerun every tuning shard")
        out.append(Reconstruction(x_hat[order], nfe[order], seconds[order]))
    return out
