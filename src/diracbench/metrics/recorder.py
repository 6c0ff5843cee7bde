"""Where reconstructions meet the clean images: per-step trajectories and the scores of a path.

Methods never see the clean images `x`. Every sampler (DPS, DDRM, DiffPIR, Dirac) and the scico
driver report each step as one `StepRecord` through `callback(record)`. The harness (`sample`,
`tune`, `ablations`, `bench`) builds a `Recorder` from the measurements file's `x` and hands it to
the method as `RunContext.recorder` (None: no trajectory wanted). The method opens a
`Trajectory` on it with its logging rules, binds each batch's image indices
(`Trajectory.bind`), passes the bound callback to its sampler and returns `Trajectory.frame()`.
Dirac's own tuning reads its per-step scores (PSNR, LPIPS, FD-VGG of x0_hat or of the iterate)
from the same object (`Trajectory.per_step`).

One implementation of each metric: `metrics.image_quality.psnr` and `data_consistency` (against
the measurement operator A_1 of operator.json), `metrics.perceptual.LPIPSMetric` and
`VGGFeatures` + `frechet_distance`. Logging rules: a row on every step divisible by `every` and on
the last one; LPIPS (and the images FD-VGG needs) on logged steps divisible by `lpips_every` and
on the last one (`lpips_every` 0: none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from diracbench.contracts import TRAJECTORY_COLUMNS
from diracbench.errors import UserError
from diracbench.metrics.image_quality import data_consistency, psnr

if TYPE_CHECKING:  # metrics sit below methods: the Problem type for annotations only
    from diracbench.methods.base import Problem
    from diracbench.metrics.perceptual import LPIPSMetric, VGGFeatures
    from diracbench.operators import LinearOperator

# Row orders of `Trajectory.frame()`: the samplers' logs are image-major, the scico driver's
# step-major (`sharding.trajectory_order` restores the same order after a sharded run).
IMAGE_MAJOR = ("image", "step")
STEP_MAJOR = ("step", "image")
QUANTITIES = ("x0_hat", "iterate")
# Clean-image LPIPS features kept per recorder up to this size (32 px val sets: ~60 MB).
REFERENCE_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class StepRecord:
    """One step of a sampler or solver, for a batch of b images.

    Images are (b, C, H, W) torch tensors in the [0, 1] image range (samplers working in [-1, 1]
    convert), not clipped: the recorder clips before every metric.
    """

    step: int  # iteration index, from 0
    t: float  # diffusion time in [0, 1] (network timestep / T; Dirac's severity); NaN for solvers
    nfe: int  # network evaluations (solver iterations) per image so far
    x0_hat: torch.Tensor  # the step's estimate of the clean images
    iterate: torch.Tensor | None = None  # the sampler's state after the step, where it has one
    last: bool = False  # the sampler's final step (always logged)


StepCallback = Callable[[StepRecord], None]


def _sync(device: torch.device) -> None:
    # CUDA runs asynchronously: without a sync the sampler's queued work would be timed as recording.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Recorder:
    """The clean images of a measurement set, with their measurements y, A_1 and names.

    Built by the harness only; a method receives it as `ctx.recorder`, selected like its
    `Problem` (`select`, `subset`), and only ever passes reconstructions to it.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, operator: LinearOperator, names: Sequence[str]) -> None:
        if x.ndim != 4 or tuple(x.shape) != tuple(y.shape) or len(names) != x.shape[0]:
            raise ValueError(f"a recorder needs x and y of one (N, C, H, W) shape and N names; got x {tuple(x.shape)}, y {tuple(y.shape)}, {len(names)} names")
        self.x = x
        self.y = y
        self.operator = operator
        self.names = list(names)
        # Metric networks and the reference features of x, built once per recorder.
        self._cache: dict = {}

    @classmethod
    def for_problem(cls, problem: Problem, x: torch.Tensor) -> "Recorder":
        """The recorder of a `Problem` whose clean images are `x` (same order)."""
        return cls(x.to(problem.y.device), problem.y, problem.operator, problem.names)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, n: int | None) -> "Recorder":
        """The first n images (all when n is None), like `Problem.subset`."""
        if n is None or n >= len(self):
            return self
        return Recorder(self.x[:n], self.y[:n], self.operator, self.names[:n])

    def select(self, index: Sequence[int]) -> "Recorder":
        """The images at `index` (repeats allowed), like `Problem.select`."""
        index = [int(i) for i in index]
        idx = torch.as_tensor(index, dtype=torch.long, device=self.device)
        return Recorder(self.x[idx], self.y[idx], self.operator, [self.names[i] for i in index])

    def trajectory(self, every: int = 1, lpips_every: int = 0, lpips: dict | None = None, deferred: bool = False, iterate: bool = False, order: Sequence[str] = IMAGE_MAJOR) -> "Trajectory":
        """A new log of one run on these images (see `Trajectory`)."""
        return Trajectory(self, every, lpips_every, lpips, deferred, iterate, order)

    def lpips_metric(self, settings: dict) -> LPIPSMetric:
        """LPIPS with `settings` {net, upsample_below} on the recorder's device (built once)."""
        from diracbench.metrics.perceptual import LPIPSMetric

        key = ("lpips", settings["net"], int(settings["upsample_below"]))
        if key not in self._cache:
            self._cache[key] = LPIPSMetric(net=settings["net"], upsample_below=settings["upsample_below"], device=self.device)
        return self._cache[key]

    def lpips_to_clean(self, settings: dict, images: torch.Tensor, index: Sequence[int] | np.ndarray, descriptors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """LPIPS between images[k] and clean image index[k] (on the CPU).

        The clean images' backbone features are computed once per recorder when they fit in
        `REFERENCE_CACHE_BYTES`; every path and grid point scored against them reuses them (the
        same numbers as scoring the pairs directly, which is the fallback for large sets).
        `descriptors` (a list) receives the images' FD-VGG descriptors from the same backbone
        pass where there is one (the vgg backbone and the cached reference); else it stays empty.
        """
        metric = self.lpips_metric(settings)
        key = ("lpips-ref", settings["net"], int(settings["upsample_below"]))
        if key not in self._cache:
            self._cache[key] = metric.reference(self.x.detach().cpu(), max_bytes=REFERENCE_CACHE_BYTES)
        ref = self._cache[key]
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if ref is None:
            return metric(images.detach().cpu(), self.x[torch.as_tensor(index, device=self.device)].detach().cpu())
        wanted = descriptors if descriptors is not None and metric.gives_vgg_descriptors else None
        return metric.against(images.detach().cpu(), ref, index, descriptors=wanted)

    def vgg_features(self, upsample_below: int) -> VGGFeatures:
        """The FD-VGG descriptor network on the recorder's device (built once)."""
        from diracbench.metrics.perceptual import VGGFeatures

        key = ("vgg", int(upsample_below))
        if key not in self._cache:
            self._cache[key] = VGGFeatures(upsample_below=upsample_below, device=self.device)
        return self._cache[key]

    def reference_features(self, upsample_below: int, images: np.ndarray) -> np.ndarray:
        """VGG16 descriptors of the clean images at `images` (cached for the whole set in order)."""
        feats = self.vgg_features(upsample_below)
        if np.array_equal(images, np.arange(len(self))):
            key = ("ref", int(upsample_below))
            if key not in self._cache:
                self._cache[key] = feats(self.x.detach().cpu()).numpy()
            return self._cache[key]
        return feats(self.x[torch.as_tensor(images, device=self.device)].detach().cpu()).numpy()


class Trajectory:
    """The per-step log of one run: rows of t, NFE, data consistency, PSNR and LPIPS per image.

    `dc` is mean((y - A_1(clip(x0_hat)))^2) in the [0, 1] range (compare with sigma_1^2), as the
    metrics stage defines it; `psnr` and `lpips` compare clip(x0_hat) with x. With `iterate`, rows
    also carry `psnr_iterate` and the iterate's images are kept for LPIPS/FD-VGG.

    Two ways of scoring LPIPS, each the historical one of its users (results stay bit-identical):
    - `deferred=False` (the DDPM samplers, scico): every logged step is scored when it happens,
      LPIPS on the step's batch; the numbers become float64.
    - `deferred=True` (Dirac): the images of the LPIPS steps wait on the host and are scored in one
      batched pass over every image of the run when a table is asked for; this also gives FD-VGG
      per step (a distance between sets: it needs all images of a step). dc and PSNR keep the
      metric's float32.
    `seconds` is the time spent recording, which methods leave out of their per-image time.
    """

    def __init__(self, recorder: Recorder, every: int, lpips_every: int, lpips: dict | None, deferred: bool, iterate: bool, order: Sequence[str]) -> None:
        if int(every) < 1:
            raise UserError(f"a trajectory's every must be at least 1 (got {every})")
        if int(lpips_every) < 0:
            raise UserError(f"a trajectory's lpips_every must be 0 (no LPIPS) or more (got {lpips_every})")
        if int(lpips_every) > 0 and not (isinstance(lpips, dict) and {"net", "upsample_below"} <= set(lpips)):
            raise UserError("LPIPS along a trajectory needs lpips settings {net, upsample_below}")
        if tuple(order) not in (IMAGE_MAJOR, STEP_MAJOR):
            raise ValueError(f"trajectory order must be {IMAGE_MAJOR} or {STEP_MAJOR}")
        self.recorder = recorder
        self.every = int(every)
        self.lpips_every = int(lpips_every)
        self.lpips = lpips
        self.deferred = bool(deferred)
        self.iterate = bool(iterate)
        self.order = list(order)
        self.seconds = 0.0
        self._blocks: list[dict] = []  # one per logged (batch, step), in recording order
        self._stored: dict[tuple[str, int], list[tuple[np.ndarray, torch.Tensor]]] = {}  # deferred images
        self._rows: pd.DataFrame | None = None
        self._lpips_values: dict[str, np.ndarray] = {}
        # FD-VGG descriptors of the deferred images, from the LPIPS pass: (quantity, step) -> (n, 512)
        self._descriptors: dict[tuple[str, int], np.ndarray] = {}

    def wants(self, step: int, last: bool) -> bool:
        return last or step % self.every == 0

    def _scores_lpips(self, step: int, last: bool) -> bool:
        return self.lpips_every > 0 and (last or step % self.lpips_every == 0)

    def bind(self, images: Sequence[int]) -> StepCallback:
        """The callback for a sampler run on the recorder's images `images` (in batch order)."""
        images = np.asarray(images, dtype=np.int64).reshape(-1)
        if images.size and (images.min() < 0 or images.max() >= len(self.recorder)):
            raise ValueError(f"image indices {images.tolist()} lie outside the recorder's {len(self.recorder)} images")

        def callback(record: StepRecord) -> None:
            if not self.wants(record.step, record.last):
                return
            if record.x0_hat.shape[0] != len(images):
                raise ValueError(f"a step record of {record.x0_hat.shape[0]} images for a callback bound to {len(images)}")
            device = record.x0_hat.device
            _sync(device)
            start = time.perf_counter()
            self._log(images, record)
            _sync(device)
            self.seconds += time.perf_counter() - start

        return callback

    @torch.no_grad()
    def _log(self, images: np.ndarray, record: StepRecord) -> None:
        rec = self.recorder
        idx = torch.as_tensor(images, device=rec.device)
        est = record.x0_hat.detach().to(rec.device).float().clamp(0.0, 1.0)
        ref = rec.x[idx].clamp(0.0, 1.0)
        values = {"dc": data_consistency(rec.y[idx], est, rec.operator), "psnr": psnr(est, ref)}
        it = None
        if self.iterate and record.iterate is not None:
            it = record.iterate.detach().to(rec.device).float().clamp(0.0, 1.0)
            values["psnr_iterate"] = psnr(it, ref)
        block = {"image": images, "step": int(record.step), "t": record.t, "nfe": int(record.nfe)}
        for name, v in values.items():
            arr = v.detach().cpu().numpy()
            block[name] = arr if self.deferred else arr.astype(np.float64)
        if self._scores_lpips(record.step, record.last):
            pairs = [("x0_hat", est)] + ([("iterate", it)] if it is not None else [])
            for quantity, img in pairs:
                if self.deferred:
                    self._stored.setdefault((quantity, int(record.step)), []).append((images, img.cpu()))
                else:
                    block[f"lpips_{quantity}"] = rec.lpips_to_clean(self.lpips, img, images).numpy().astype(np.float64)
        self._blocks.append(block)
        self._rows = None
        self._lpips_values.clear()
        self._descriptors.clear()

    # ------------------------------------------------------------------------------------------
    # Tables

    @property
    def rows(self) -> pd.DataFrame:
        """One row per logged step and image, in recording order: image, step, t, nfe, dc, psnr
        (and psnr_iterate). Shared: copy before changing it."""
        if self._rows is None:
            self._rows = self._build_rows()
        return self._rows

    def _build_rows(self) -> pd.DataFrame:
        frames = []
        for b in self._blocks:
            frame = pd.DataFrame({"image": b["image"], "step": b["step"], "t": b["t"], "nfe": b["nfe"], "dc": b["dc"], "psnr": b["psnr"]})
            if "psnr_iterate" in b:
                frame["psnr_iterate"] = b["psnr_iterate"]
            frames.append(frame)
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("image", "step", "nfe") else np.float64) for c in ("image", "step", "t", "nfe", "dc", "psnr")})
        return pd.concat(frames, ignore_index=True)

    def lpips_values(self, quantity: str = "x0_hat") -> np.ndarray:
        """LPIPS of `quantity` per row of `rows` (NaN on rows without a score)."""
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}")
        if quantity not in self._lpips_values:
            self._lpips_values[quantity] = self._deferred_lpips(quantity) if self.deferred else self._immediate_lpips(quantity)
        return self._lpips_values[quantity]

    def _immediate_lpips(self, quantity: str) -> np.ndarray:
        key = f"lpips_{quantity}"
        parts = [b[key] if key in b else np.full(len(b["image"]), np.nan) for b in self._blocks]
        return np.concatenate(parts) if parts else np.empty(0)

    def _deferred_lpips(self, quantity: str) -> np.ndarray:
        # Every stored step of the run in one batched pass: steps in order, images in batch order.
        steps = sorted(s for (q, s) in self._stored if q == quantity)
        rows = self.rows
        if not steps:
            return np.full(len(rows), np.nan)
        pieces = [(s, images, img) for s in steps for images, img in self._stored[(quantity, s)]]
        est = torch.cat([img for _, _, img in pieces])
        descriptors: list[torch.Tensor] = []
        d = self.recorder.lpips_to_clean(self.lpips, est, np.concatenate([images for _, images, _ in pieces]), descriptors).numpy()
        if descriptors:
            # Kept per step for fd_vgg, in the stored order: one VGG pass serves both metrics.
            desc, k = torch.cat(descriptors).numpy(), 0
            for s in steps:
                n = sum(len(images) for images, _ in self._stored[(quantity, s)])
                self._descriptors[(quantity, s)] = desc[k : k + n]
                k += n
        lookup, k = {}, 0
        for s, images, _ in pieces:
            for i in images:
                lookup[(s, int(i))] = d[k]
                k += 1
        return np.asarray([lookup.get((s, i), np.nan) for s, i in zip(rows["step"], rows["image"])], dtype=np.float64)

    def frame(self) -> pd.DataFrame:
        """TRAJECTORY_COLUMNS, one row per logged step and image, in `order`."""
        rows = self.rows
        traj = rows[["image", "step", "t", "nfe", "dc", "psnr"]].copy()
        names = self.recorder.names
        traj.insert(1, "name", [names[i] for i in traj["image"]])
        traj["lpips"] = self.lpips_values("x0_hat")
        return traj[list(TRAJECTORY_COLUMNS)].sort_values(self.order, kind="stable").reset_index(drop=True)

    def fd_vgg(self, quantity: str = "x0_hat") -> dict[int, float]:
        """FD-VGG between the images of `quantity` at each stored step and the clean images
        (deferred trajectories; steps stored for every image the run logged)."""
        from diracbench.metrics.perceptual import frechet_distance

        if not self.deferred:
            raise ValueError("FD-VGG per step needs a deferred trajectory (it keeps every image of a step)")
        seen = np.unique(np.concatenate([b["image"] for b in self._blocks])) if self._blocks else np.empty(0, np.int64)
        upsample_below = int(self.lpips["upsample_below"])
        feats = self.recorder.vgg_features(upsample_below)
        out = {}
        for (q, s), pieces in sorted(self._stored.items()):
            if q != quantity:
                continue
            images = np.concatenate([i for i, _ in pieces])
            if not np.array_equal(np.unique(images), seen):
                continue
            ref = self.recorder.reference_features(upsample_below, images)
            mine = self._descriptors.get((q, s))
            if mine is None:
                mine = feats(torch.cat([img for _, img in pieces])).numpy()
            out[s] = frechet_distance(mine, ref)
        return out

    def per_step(self, quantity: str = "x0_hat", fd_vgg: bool = False) -> pd.DataFrame:
        """Means over images per step: step, t, nfe, psnr, lpips, dc of `quantity` (x0_hat or the
        iterate; dc is always x0_hat's), and fd_vgg where asked for."""
        rows = self.rows
        lp = self.lpips_values("x0_hat")
        table = rows.assign(lpips=lp).groupby("step").agg(t=("t", "first"), nfe=("nfe", "first"), psnr=("psnr", "mean"), lpips=("lpips", "mean"), dc=("dc", "mean"))
        if quantity == "iterate":
            if "psnr_iterate" not in rows:
                raise ValueError("this trajectory did not record the iterate (iterate=True)")
            table["psnr"] = rows.groupby("step")["psnr_iterate"].mean()
            table["lpips"] = pd.Series(self.lpips_values("iterate"), index=rows.index).groupby(rows["step"]).mean()
        elif quantity != "x0_hat":
            raise ValueError(f"quantity must be one of {QUANTITIES}")
        if fd_vgg:
            table["fd_vgg"] = pd.Series(self.fd_vgg(quantity), dtype=np.float64)
        return table.reset_index()


def recording_seconds(log: Trajectory | None) -> float:
    """Time a log has spent recording so far (0 without one): methods leave it out of their
    per-image time."""
    return 0.0 if log is None else log.seconds
