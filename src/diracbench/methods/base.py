"""The data every method receives and returns.

A method sees the measurements `y`, the operator that made them and its noise level, never the
clean images `x`: the harness keeps those in a `Recorder` (metrics/recorder.py) and hands it to
the method as `RunContext.recorder`, through which the method's sampler logs the quality of its
steps (PSNR/LPIPS of its x0 estimate per step, for the paper's figures) without the algorithm
ever holding `x`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diracbench.errors import UserError
from diracbench.io import read_npz
from diracbench.metrics.recorder import TRAJECTORY_COLUMNS, Recorder
from diracbench.operators import DegradationFamily, LinearOperator, family_from_spec, load_operator_spec
from diracbench.seeding import seed_from_string


@dataclass
class Problem:
    y: torch.Tensor  # (N, C, H, W) measurements in [0, 1]
    names: list[str]
    spec: dict  # operator.json
    family: DegradationFamily  # the operator family with its linear severity rule
    operator: LinearOperator  # A_1, the measurement operator
    sigma_1: float  # measurement noise std in [0, 1] units
    split: str

    @property
    def task(self) -> str:
        return self.spec["task"]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, n: int | None) -> "Problem":
        """The first n images (all when n is None)."""
        if n is None or n >= len(self):
            return self
        return Problem(self.y[:n], self.names[:n], self.spec, self.family, self.operator, self.sigma_1, self.split)

    def select(self, index: list[int]) -> "Problem":
        """The images at `index` (repeats allowed: a padded batch), in that order."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.y.device)
        return Problem(self.y[idx], [self.names[i] for i in index], self.spec, self.family, self.operator, self.sigma_1, self.split)

    def image_seeds(self, *parts: Any) -> list[int]:
        """One sampling seed per image, from its name: independent of batch composition."""
        return [seed_from_string("sample", *parts, self.split, name) for name in self.names]


@dataclass
class RunContext:
    device: torch.device
    threads: int
    seed: int
    inputs: dict[str, Path] = field(default_factory=dict)  # model weights, schedule, ... by name
    # Loaded models by key: `sample` calls a method once per batch and must not reload its weights.
    cache: dict = field(default_factory=dict, repr=False)
    # The clean images of exactly the problem's images, for trajectories (None: none wanted).
    recorder: Recorder | None = field(default=None, repr=False)

    def cached(self, key: Any, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def input(self, name: str) -> Path:
        if name not in self.inputs:
            raise UserError(f"this method needs --input {name}=PATH (e.g. a weights file); the rule did not pass it")
        return self.inputs[name]


@dataclass
class Reconstruction:
    x_hat: np.ndarray  # (N, C, H, W) float32, clipped to [0, 1]
    nfe: np.ndarray  # (N,) network evaluations (or solver iterations) per image
    seconds: np.ndarray  # (N,) wall time per image (batch time / batch size when batched)
    trajectory: pd.DataFrame | None = None  # TRAJECTORY_COLUMNS, one row per step and image
    # Further outputs by name, each a dict of arrays written as one .npz by `sample --extra-out
    # NAME=PATH` (Dirac: "posterior_samples" for the uncertainty map).
    extras: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x_hat = np.clip(np.asarray(self.x_hat, dtype=np.float32), 0.0, 1.0)
        n = len(self.x_hat)
        self.nfe = np.asarray(self.nfe, dtype=np.int64).reshape(-1)
        self.seconds = np.asarray(self.seconds, dtype=np.float64).reshape(-1)
        if self.nfe.shape != (n,) or self.seconds.shape != (n,):
            raise ValueError("nfe and seconds need one entry per image")
        if self.trajectory is not None:
            missing = set(TRAJECTORY_COLUMNS) - set(self.trajectory.columns)
            if missing:
                raise ValueError(f"trajectory lacks columns {sorted(missing)}")


def recorder_for(problem: Problem, ctx: RunContext) -> Recorder | None:
    """`ctx.recorder`, checked to hold the problem's images (the harness selects both alike)."""
    recorder = ctx.recorder
    if recorder is not None and recorder.names != problem.names:
        raise ValueError(f"the run context's recorder holds other images ({recorder.names[:3]}...) than the problem ({problem.names[:3]}...); select it with the problem")
    return recorder


def load_problem(operator_json: str | Path, measurements: str | Path, split: str, device: torch.device) -> Problem:
    """A method's input from operator.json and a measurements file (its clean images stay behind)."""
    return _load(operator_json, measurements, split, device)[0]


def load_problem_and_recorder(operator_json: str | Path, measurements: str | Path, split: str, device: torch.device, max_images: int | None = None) -> tuple[Problem, Recorder]:
    """The method's input (the first `max_images` images) and the harness's recorder of the same images."""
    problem, x = _load(operator_json, measurements, split, device)
    problem = problem.subset(max_images)
    return problem, Recorder.for_problem(problem, x[: len(problem)])


def _load(operator_json: str | Path, measurements: str | Path, split: str, device: torch.device) -> tuple[Problem, torch.Tensor]:
    spec = load_operator_spec(operator_json)
    data = read_npz(measurements, required=("x", "y", "names"), producer="the 'measure' rule")
    y = torch.from_numpy(data["y"]).to(device)
    x = torch.from_numpy(data["x"]).to(device)
    if y.shape != x.shape or y.ndim != 4:
        raise UserError(f"{measurements}: x {tuple(x.shape)} and y {tuple(y.shape)} must both be N x C x H x W; rerun 'measure'")
    if list(y.shape[-2:]) != list(spec["image_size"]):
        raise UserError(f"{measurements} holds {tuple(y.shape[-2:])} images but {operator_json} describes {spec['image_size']}; rerun 'measure'")
    family = family_from_spec(spec, device=device)
    problem = Problem(y, [str(n) for n in data["names"]], spec, family, family.measurement_operator(), float(spec["sigma_1"]), split)
    return problem, x


def empty_trajectory() -> pd.DataFrame:
    return pd.DataFrame(columns=list(TRAJECTORY_COLUMNS))


@dataclass
class TuningResult:
    """What a method's own `tune` returns: the chosen values, the table behind the choice, and
    optionally a trajectory (Dirac records its whole reverse path on val for Fig. 3)."""

    chosen: dict
    grid: pd.DataFrame
    trajectory: pd.DataFrame | None = None


def batched_grid(method: Any, problem: Problem, candidates: list[dict], ctx: RunContext) -> list[Reconstruction]:
    """A whole tuning grid in one batched run, for a method whose `grid_entries` lists the
    (candidate, image) pairs it can batch and `reconstruct_entries` samples them; candidates it
    cannot batch (None) run one by one through `reconstruct`."""
    entries = method.grid_entries(len(problem), candidates)
    if entries is None:
        return [method.reconstruct(problem, c, ctx) for c in candidates]
    n = len(problem)
    r = method.reconstruct_entries(problem, candidates, entries, ctx)
    return [Reconstruction(r.x_hat[j * n : (j + 1) * n], r.nfe[j * n : (j + 1) * n], r.seconds[j * n : (j + 1) * n]) for j in range(len(candidates))]
