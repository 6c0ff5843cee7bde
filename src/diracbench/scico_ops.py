"""JAX/scico side of the two classical baselines (PnP-ADMM, ADMM-TV): operators and batch driver.

Operators. `build_operator(spec, batch)` rebuilds the measurement operator A_1 of operator.json as
a scico `LinearOperator` on image batches laid out (N, H, W, C), the layout scico and flax use,
together with the exact solve of (c A^T A + rho I) x = b used as the ADMM x-update and the
"measurement" initialisation. Each operator kind owns its adapter (`operators/<kind>_scico.py`),
found through `diracbench.operators.registry`. The solve is exact per image, so, unlike conjugate
gradients with inner products over the whole batch, an image's result does not depend on which
other images share its batch.

Batch driver. `solve_candidates` runs one method on every (grid point, image) pair at once:
vectorisable hyper-parameters (rho, lambda) become one value per batch element, the iteration
count is read off a single longest run by snapshots, and the batch is cut into equal chunks so
every chunk reuses the same compiled shapes. With a trajectory (metrics/recorder.py), every
iterate of the jitted solver step goes to the recorder as a `StepRecord` (step k = after k
iterations, 0 the initial x); the clean images never enter the driver.

JAX is imported lazily (`jax_modules`) after `configure_jax` has set the platform and threads.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from diracbench.errors import UserError

if TYPE_CHECKING:  # torch-free at import: the recorder's types only
    from diracbench.metrics.recorder import StepCallback, StepRecord, Trajectory

BLUR_IMPLS = ("fft", "matrix")
INITS = ("adjoint", "measurement")


# --------------------------------------------------------------------------------------------
# JAX set-up


def configure_jax(threads: int, device: str = "cpu") -> None:
    """Pick the JAX platform and thread use; effective only before jax is first imported.

    XLA:CPU sizes its thread pool by the CPUs this process may run on (its affinity, which Slurm
    sets to the allocated cores); it has no thread-count option. With one thread we switch off
    Eigen's multi-threading, the one knob XLA offers.
    """
    if device.startswith("cuda"):
        os.environ.setdefault("JAX_PLATFORMS", "cuda")
        # torch may hold the same GPU in this process: don't let JAX grab 75% of its memory.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flags = os.environ.get("XLA_FLAGS", "")
    if int(threads) <= 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()


def jax_modules():
    """(jax, jnp) after checking that the requested platform initialised."""
    import jax
    import jax.numpy as jnp

    try:
        jax.devices()
    except RuntimeError as err:
        raise UserError(f"JAX could not start its {os.environ.get('JAX_PLATFORMS', 'default')} backend ({err}); run the scico methods with --device cpu or install a CUDA build of jax in the scico environment") from None
    return jax, jnp


# --------------------------------------------------------------------------------------------
# Layout


def to_nhwc(x: Any) -> np.ndarray:
    """(N, C, H, W) torch/numpy -> (N, H, W, C) float32 numpy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), (0, 2, 3, 1)))


def to_nchw(x: Any) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), (0, 3, 1, 2)))


# --------------------------------------------------------------------------------------------
# Operators


@dataclass
class ScicoOperator:
    """A_1 on (N, H, W, C) batches, with the exact solve of (c A^T A + rho I) x = b."""

    kind: str  # the operator kind of operator.json's family
    A: Any  # scico.linop.LinearOperator
    normal_solve: Callable[[Any, Any, float], Any]  # (b, rho broadcastable to b, c) -> x
    measurement_init: Callable[[Any], Any]  # y -> x0 for init "measurement" (the kind's own guess)
    mask: Any = None  # (H, W, 1) jnp array for inpainting

    def init(self, y: Any, how: str) -> Any:
        """x0 for the solvers: A^T y, or the kind's guess from the measurement itself."""
        if how == "adjoint":
            return self.A.adj(y)
        if how == "measurement":
            return self.measurement_init(y)
        raise UserError(f"unknown init {how!r}; use one of {list(INITS)}")


def operator_key(spec: dict) -> str:
    """operator.json's operator part as a hashable string, for caching compiled solvers."""
    import json

    return json.dumps({"family": spec["family"], "channels": spec.get("channels", 3)}, sort_keys=True)


def build_operator(spec: dict, batch: int, blur_impl: str = "fft") -> ScicoOperator:
    """The scico version of operator.json's A_1 for batches of `batch` images (`blur_impl`:
    which of the blur's two implementations; other kinds ignore it)."""
    from diracbench.operators.registry import operator_kind

    fam = spec["family"]
    adapter = operator_kind(fam["kind"], "operator.json family kind").scico
    h, w = (int(v) for v in fam["image_size"])
    shape = (int(batch), h, w, int(spec.get("channels", 3)))
    return adapter(fam, shape, blur_impl)


def per_image(values: np.ndarray) -> Any:
    """(n,) hyper-parameter values -> (n, 1, 1, 1) float32, broadcasting over (n, H, W, C)."""
    _, jnp = jax_modules()
    return jnp.asarray(np.asarray(values, dtype=np.float32).reshape(-1, 1, 1, 1))


# --------------------------------------------------------------------------------------------
# Batch driver


@dataclass
class Chunk:
    """One batch handed to a method's solver."""

    hparams: dict  # the structural (non-vectorised) hyper-parameters of this batch
    y: np.ndarray  # (n, H, W, C)
    params: dict[str, np.ndarray]  # vectorised hyper-parameters, one value per batch element
    snapshots: list[int]  # iteration counts at which to return the iterate
    callback: StepCallback | None = None  # the recorder's callback, bound to the first `real` elements
    real: int | None = None  # elements that are real images (the rest pad the chunk); None: all


@dataclass
class ChunkResult:
    iterates: dict[int, np.ndarray]  # iteration count -> (n, H, W, C)
    stats: dict[str, np.ndarray] | None = None  # name -> (iterations, n): a solver's own history
    seconds: float | None = None  # the iterations' wall time, without set-up, JIT compilation and recording


def run_iterations(step: Callable, state: Any, args: tuple, chunk: Chunk, observe: Callable[[Any], None] | None = None) -> tuple[dict[int, np.ndarray], float]:
    """Iterate a jitted solver step, keeping the iterates `chunk.snapshots` asks for; every
    iterate (the initial x too) goes to `observe` and, as a step record, to `chunk.callback`.

    One discarded warm-up step compiles `step` first, so the returned wall time measures the
    iterations alone (the one-off compilation shows in the job's total wall time instead); the
    recorder's time is left out too.
    """
    jax, _ = jax_modules()
    recording = 0.0

    def visit(done: int, x: Any) -> None:
        nonlocal recording
        if observe is not None:
            observe(x)
        if chunk.callback is not None:
            # Wait for the iteration first: JAX dispatches asynchronously, and its work is not recording.
            x = jax.block_until_ready(x)
            tic = time.perf_counter()
            chunk.callback(_record(done, x, chunk))
            recording += time.perf_counter() - tic

    visit(0, state["x"])
    jax.block_until_ready(step(state, *args))
    iterates: dict[int, np.ndarray] = {}
    recording = 0.0  # the initial record lies outside the timed iterations
    start = time.perf_counter()
    for done in range(1, chunk.snapshots[-1] + 1):
        state = step(state, *args)
        if done in chunk.snapshots:
            iterates[done] = np.asarray(state["x"])
        visit(done, state["x"])
    return iterates, time.perf_counter() - start - recording


def _record(done: int, x: Any, chunk: Chunk) -> StepRecord:
    """The iterate after `done` iterations as the recorder's step record (real images, NCHW torch)."""
    import torch

    from diracbench.metrics.recorder import StepRecord

    real = len(chunk.y) if chunk.real is None else chunk.real
    x0 = torch.from_numpy(to_nchw(np.asarray(x)[:real]))
    return StepRecord(step=done, t=math.nan, nfe=done, x0_hat=x0, iterate=None, last=done == chunk.snapshots[-1])


def check_hparams(hp: dict, required: Iterable[str], method: str) -> None:
    missing = sorted(set(required) - set(hp))
    if missing:
        raise UserError(f"{method} needs hyper-parameters {missing}: set them under '{method}.hparams' or tune them ('{method}.grid', rule tune_{method.replace('-', '_')}) and pass --tuned chosen.yaml")
    unknown = sorted(set(hp) - set(required))
    if unknown:
        raise UserError(f"{method} does not know the hyper-parameters {unknown}; known: {sorted(required)}")


def solve_candidates(
    problem: Any,
    candidates: Sequence[dict],
    *,
    method: str,
    required: Sequence[str],
    vectorised: Sequence[str],
    solve_chunk: Callable[[Chunk], ChunkResult],
    trajectory: Trajectory | None = None,
) -> list:
    """Reconstruct `problem` once per candidate hyper-parameter set, batching everything possible.

    Candidates that differ only in `vectorised` keys and in `maxiter` share one run: each batch
    element is one (vectorised values, image) pair, and shorter iteration counts are snapshots of
    the longest. `seconds` per image is the batch's iteration time (without JIT compilation and
    recording) shared equally by its elements, times maxiter / longest maxiter. `trajectory` (a
    `metrics.recorder.Trajectory` on the problem's images) logs the run of a single candidate.
    """
    from diracbench.methods.base import Reconstruction

    if trajectory is not None and len(candidates) != 1:
        raise ValueError("a trajectory records the run of one candidate")
    y_all = to_nhwc(problem.y)
    n_img = len(problem)
    for hp in candidates:
        check_hparams(hp, required, method)
        if int(hp["maxiter"]) < 1:
            raise UserError(f"{method}: maxiter must be at least 1 (got {hp['maxiter']})")
    results: list[Any] = [None] * len(candidates)
    structural_keys = [k for k in required if k not in vectorised and k != "maxiter"]
    groups: dict[tuple, list[int]] = {}
    for ci, hp in enumerate(candidates):
        groups.setdefault(tuple((k, _hashable(hp[k])) for k in structural_keys), []).append(ci)
    for members in groups.values():
        structural = {k: candidates[members[0]][k] for k in structural_keys}
        points = sorted({tuple(float(candidates[ci][k]) for k in vectorised) for ci in members})
        snapshots = sorted({int(candidates[ci]["maxiter"]) for ci in members})
        longest = snapshots[-1]
        jobs = [(p, i) for p in range(len(points)) for i in range(n_img)]
        iterates = {k: np.empty((len(jobs),) + y_all.shape[1:], np.float32) for k in snapshots}
        seconds = np.empty(len(jobs))
        batch_size = max(1, int(structural.get("batch_size", len(jobs))))
        for sl in _equal_chunks(len(jobs), batch_size):
            idx = list(range(sl.start, sl.stop))
            # Pad the last chunk to the common size: one compiled shape for all chunks.
            size = _chunk_size(len(jobs), batch_size)
            padded = idx + [idx[-1]] * (size - len(idx))
            imgs = [jobs[j][1] for j in padded]
            chunk = Chunk(
                hparams=structural,
                y=y_all[imgs],
                params={k: np.array([points[jobs[j][0]][vi] for j in padded]) for vi, k in enumerate(vectorised)},
                snapshots=snapshots,
                callback=None if trajectory is None else trajectory.bind([jobs[j][1] for j in idx]),
                real=len(idx),
            )
            start = time.perf_counter()
            out = solve_chunk(chunk)
            elapsed = out.seconds if out.seconds is not None else time.perf_counter() - start
            seconds[idx] = elapsed / len(idx)
            for k in snapshots:
                iterates[k][idx] = out.iterates[k][: len(idx)]
        for ci in members:
            hp = candidates[ci]
            p = points.index(tuple(float(hp[k]) for k in vectorised))
            k = int(hp["maxiter"])
            sel = slice(p * n_img, (p + 1) * n_img)
            results[ci] = Reconstruction(
                x_hat=to_nchw(iterates[k][sel]),
                nfe=np.full(n_img, k),
                seconds=seconds[sel] * k / longest,
                trajectory=None if trajectory is None else trajectory.frame(),
            )
    return results


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _chunk_size(total: int, batch_size: int) -> int:
    n_chunks = max(1, math.ceil(total / batch_size))
    return math.ceil(total / n_chunks)


def _equal_chunks(total: int, batch_size: int) -> list[slice]:
    size = _chunk_size(total, batch_size)
    return [slice(s, min(total, s + size)) for s in range(0, total, size)]


def itstat_quiet() -> dict:
    """scico iteration statistics reduced to the iteration number (no residual norms, no output):
    the batch mixes images and hyper-parameters, so scico's whole-batch norms would mean nothing."""
    return {"fields": {"Iter": "%d"}, "itstat_func": lambda obj: (obj.itnum,), "display": False}
