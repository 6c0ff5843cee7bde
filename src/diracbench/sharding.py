"""Sampling in whole method batches: shards of a split, resumable batch by batch, and their gather.

Each method already samples a split batch by batch with one seed per image (from its name), so an
image's result depends on the images that share its batch only through the batch's shape. The
`sample` stage therefore runs a method one batch at a time, on exactly the batches an unsharded
run makes (`batch_plan`), and keeps each finished batch in a partial folder (one atomic .npz per
batch). A shard (`--shard K/N`) is a contiguous run of whole batches; a retry after a kill skips
the batches already on disk; `gather` concatenates shard files into the usual outputs. Sharded,
resumed and plain runs thus compute the same batches with the same arrays: bit-identical results.

Batching rules (which the methods' own loops follow):
- dps, ddrm, dirac-po/do: consecutive blocks of `batch_size` images, the last one shorter;
- pnp-admm, admm-tv (scico): the split is cut into equal chunks of ceil(n / ceil(n / batch_size))
  images and the last chunk is padded with copies of its last image to the common size (one
  compiled shape); a lone batch is padded here the same way, and the copies are dropped.
Whole-split extras (Dirac's posterior samples of the first images) are one more piece, made by the
shard that holds image 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diracbench.errors import UserError
from diracbench.io import atomic_path, read_npz

EQUAL_CHUNK_METHODS = ("pnp-admm", "admm-tv")  # scico_ops.solve_candidates' batching


def trajectory_order(method: str) -> list[str]:
    """Row order of a method's whole-split trajectory (scico logs step-major, the others image-major)."""
    return ["step", "image"] if method in EQUAL_CHUNK_METHODS else ["image", "step"]
PARTIAL_FORMAT = "diracbench-partial-1"


@dataclass(frozen=True)
class Batch:
    index: int
    start: int
    stop: int
    size: int  # the batch's computed size (> stop - start when padded)


def batch_plan(method: str, n_images: int, batch_size: int) -> list[Batch]:
    """The batches an unsharded run of `method` makes over `n_images` images."""
    bs = max(1, int(batch_size))
    if n_images <= 0:
        return []
    if method in EQUAL_CHUNK_METHODS:
        size = math.ceil(n_images / max(1, math.ceil(n_images / bs)))
        return [Batch(i, s, min(n_images, s + size), size) for i, s in enumerate(range(0, n_images, size))]
    return [Batch(i, s, min(n_images, s + bs), min(n_images, s + bs) - s) for i, s in enumerate(range(0, n_images, bs))]


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (K from 0 to N-1) -> (K, N)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4") from None
    if n < 1 or not 0 <= k < n:
        raise UserError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return k, n


def shard_batches(plan: list[Batch], shard: tuple[int, int] | None = None, images: str | None = None) -> list[Batch]:
    """The batches of one shard: shard K of N takes the K-th run of ceil(B / N) batches (possibly
    none); `images` START:STOP must fall on batch boundaries."""
    if shard is not None and images is not None:
        raise UserError("give either --shard or --images, not both")
    if images is not None:
        try:
            start, stop = (int(v) for v in images.split(":"))
        except ValueError:
            raise UserError(f"--images {images!r}: expected START:STOP") from None
        n = plan[-1].stop if plan else 0
        bounds = sorted({b.start for b in plan} | {n})
        if start not in bounds or min(stop, n) not in bounds or stop < start:
            raise UserError(f"--images {images}: shard boundaries must fall between the method's batches (boundaries: {bounds[:12]}{' ...' if len(bounds) > 12 else ''}); results are bit-identical only in whole batches")
        chosen = [b for b in plan if start <= b.start and b.stop <= stop]
        return chosen
    if shard is None:
        return list(plan)
    k, n = shard
    per = math.ceil(len(plan) / n) if plan else 0
    return plan[k * per : (k + 1) * per]


# ----------------------------------------------------------------------------------------------
# Pieces: one batch's (or the extras') arrays in one .npz, trajectory columns included


def frame_to_arrays(frame: pd.DataFrame | None, prefix: str = "traj__") -> dict[str, np.ndarray]:
    if frame is None:
        return {}
    out = {f"{prefix}__columns": np.array(list(frame.columns))}
    for col in frame.columns:
        values = frame[col].to_numpy()
        out[f"{prefix}{col}"] = values.astype(str) if values.dtype == object else values
    return out


def arrays_to_frame(arrays: dict[str, np.ndarray], prefix: str = "traj__") -> pd.DataFrame | None:
    if f"{prefix}__columns" not in arrays:
        return None
    cols = [str(c) for c in arrays[f"{prefix}__columns"]]
    return pd.DataFrame({c: (arrays[f"{prefix}{c}"].astype(object) if arrays[f"{prefix}{c}"].dtype.kind == "U" else arrays[f"{prefix}{c}"]) for c in cols}, columns=cols)


def extras_to_arrays(extras: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"extra__{name}__{key}": np.asarray(v) for name, d in extras.items() for key, v in d.items()}


def arrays_to_extras(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    extras: dict[str, dict[str, np.ndarray]] = {}
    for k, v in arrays.items():
        if k.startswith("extra__"):
            _, name, key = k.split("__", 2)
            extras.setdefault(name, {})[key] = v
    return extras


def save_piece(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


# ----------------------------------------------------------------------------------------------
# The partial folder of one run


def _file_identity(path: Path) -> list:
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def code_digest() -> str:
    """A hash of the package's sources: finished batches are reused only by the same code."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def run_key(description: dict, files: list[Path]) -> str:
    """What makes finished batches reusable: settings, shard, code and the input files' identities."""
    record = {"format": PARTIAL_FORMAT, **description, "code": code_digest(), "files": [_file_identity(f) for f in files]}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


class PartialDir:
    """Finished pieces of one run, reused only when the run key matches."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        stamp = self.path / "key.txt"
        if self.path.exists() and (not stamp.is_file() or stamp.read_text().strip() != key):
            shutil.rmtree(self.path)  # another run's batches (other settings, inputs or code)
        self.path.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            with atomic_path(stamp) as tmp:
                tmp.write_text(key + "\n")

    def piece(self, name: str) -> Path:
        return self.path / f"{name}.npz"

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.piece(name)
        if not path.is_file():
            return None
        try:
            return read_npz(path)
        except UserError:
            path.unlink(missing_ok=True)  # cannot happen with atomic writes, but never trust it
            return None

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        save_piece(self.piece(name), arrays)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def default_partial_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.partial"


# ----------------------------------------------------------------------------------------------
# Assembling pieces into the stage's outputs


@dataclass
class Assembled:
    x_hat: np.ndarray
    names: np.ndarray
    nfe: np.ndarray
    seconds: np.ndarray
    trajectory: pd.DataFrame | None
    extras: dict[str, dict[str, np.ndarray]]
    order: list[str]


def assemble(pieces: list[dict[str, np.ndarray]], extras: dict[str, dict[str, np.ndarray]], shape: tuple[int, ...], order: list[str]) -> Assembled:
    if pieces:
        x_hat = np.concatenate([p["x_hat"] for p in pieces])
        names = np.concatenate([p["names"] for p in pieces])
        nfe = np.concatenate([p["nfe"] for p in pieces])
        seconds = np.concatenate([p["seconds"] for p in pieces])
    else:
        x_hat, names, nfe, seconds = np.empty((0, *shape), np.float32), np.array([], dtype=str), np.empty(0, np.int64), np.empty(0, np.float64)
    frames = [f for f in (arrays_to_frame(p) for p in pieces) if f is not None]
    trajectory = pd.concat(frames, ignore_index=True) if frames else None
    if trajectory is not None and len(frames) > 1:
        # Batches are consecutive images, so one stable sort restores the whole-split row order.
        trajectory = trajectory.sort_values(order, kind="stable").reset_index(drop=True)
    return Assembled(x_hat, names, nfe, seconds, trajectory, extras, order)


def write_outputs(result: Assembled, out: Path, trajectory_path: Path, extra_out: dict[str, Path]) -> None:
    """recon/<split>.npz, trajectory.csv and the extras, all committed together (as `sample` always did)."""
    from diracbench.contracts import TRAJECTORY_COLUMNS
    from diracbench.io import OutputSet

    # The columns from the contract, not methods.base: a gather job need not import torch.
    trajectory = result.trajectory if result.trajectory is not None else pd.DataFrame(columns=list(TRAJECTORY_COLUMNS))
    missing = sorted(set(extra_out) - set(result.extras))
    if missing:
        raise UserError(f"no extra output {missing} was produced (made: {sorted(result.extras)}); check the method's settings")
    with OutputSet() as outs:
        with open(outs.path(out), "wb") as fh:
            np.savez(fh, x_hat=result.x_hat, names=result.names, nfe=result.nfe, seconds=result.seconds)
        trajectory.to_csv(outs.path(trajectory_path), index=False)
        for name, path in extra_out.items():
            with open(outs.path(path), "wb") as fh:
                np.savez(fh, **result.extras[name])


def shard_arrays(result: Assembled, start: int, stop: int, total: int) -> dict[str, Any]:
    """One shard file: its images' arrays, trajectory columns and extras, with its place in the split."""
    arrays = {"x_hat": result.x_hat, "names": result.names, "nfe": result.nfe, "seconds": result.seconds, "images": np.array([start, stop, total], dtype=np.int64), "trajectory_order": np.array(result.order)}
    arrays.update(frame_to_arrays(result.trajectory))
    arrays.update(extras_to_arrays(result.extras))
    return arrays
