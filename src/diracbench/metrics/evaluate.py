"""Score one method's test reconstructions: per-image metrics and bootstrap-CI aggregates.

A method's recon file may cover a subset of the test images (DPS is expensive); its images are
matched to the measurements by name, and the set-level distances (FD-VGG, FID) compare it with
the ground truth of exactly those images.

The reference row `y` scores the measurement itself as if it were a reconstruction, so a reader
sees what each method improves on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diracbench.errors import UserError
from diracbench.io import read_npz

from diracbench.metrics.registry import METRICS, per_image_metrics, set_metrics

REFERENCE_METHOD = "y"

# Per-image columns of per_image.csv and the set-level rows of aggregate.csv, in registry order.
PER_IMAGE_METRICS = per_image_metrics()
SET_METRICS = set_metrics()


@dataclass
class Recon:
    x_hat: np.ndarray  # (N, C, H, W) float32
    names: list[str]
    nfe: np.ndarray  # (N,)
    seconds: np.ndarray  # (N,)


@dataclass
class Measurements:
    x: np.ndarray
    y: np.ndarray
    names: list[str]
    path: Path = field(default=Path("measurements/test.npz"))


def read_measurements(path: Path) -> Measurements:
    data = read_npz(path, required=("x", "y", "names"), producer="the 'measure' rule")
    names = [str(n) for n in data["names"]]
    if data["x"].shape != data["y"].shape or data["x"].ndim != 4 or len(names) != len(data["x"]):
        raise UserError(f"{path}: x {data['x'].shape}, y {data['y'].shape} and {len(names)} names disagree; delete it and rerun 'measure'")
    return Measurements(data["x"].astype(np.float32), data["y"].astype(np.float32), names, Path(path))


def read_recon(path: Path, method: str, meas: Measurements) -> Recon:
    """Load and validate a method's recon/test.npz against the measurements it reconstructs."""
    producer = f"the '{method}' reconstruction rule"
    data = read_npz(path, required=("x_hat", "names", "nfe", "seconds"), producer=producer)
    x_hat, names = data["x_hat"], [str(n) for n in data["names"]]
    n = len(names)
    if x_hat.ndim != 4 or x_hat.shape[0] != n or x_hat.shape[1:] != meas.x.shape[1:]:
        raise UserError(
            f"{path}: x_hat has shape {x_hat.shape} for {n} names, but the test images are {meas.x.shape[1:]}; "
            f"delete it and rerun {producer}"
        )
    for key in ("nfe", "seconds"):
        if data[key].shape != (n,):
            raise UserError(f"{path}: '{key}' has shape {data[key].shape}, expected ({n},) — one value per image; delete it and rerun {producer}")
    if n == 0:
        raise UserError(f"{path} holds no images; rerun {producer}")
    bad = ~np.isfinite(x_hat.reshape(n, -1)).all(axis=1)
    if bad.any():
        which = [names[i] for i in np.flatnonzero(bad)[:5]]
        raise UserError(f"{path}: x_hat has NaN/inf values for {int(bad.sum())} images (e.g. {which}); the method diverged — fix its settings and rerun {producer}")
    return Recon(x_hat.astype(np.float32), names, data["nfe"].astype(np.float64), data["seconds"].astype(np.float64))


def reference_recon(meas: Measurements) -> Recon:
    """The measurement scored as a reconstruction (no network evaluations, no solver time)."""
    n = len(meas.names)
    return Recon(meas.y, list(meas.names), np.full(n, np.nan), np.full(n, np.nan))


def match_names(recon_names: list[str], meas_names: list[str], path: Path) -> np.ndarray:
    """Indices into the measurements of each reconstructed image; unknown or repeated names fail."""
    index = {name: i for i, name in enumerate(meas_names)}
    missing = [n for n in recon_names if n not in index]
    if missing:
        raise UserError(f"{path}: {len(missing)} image names are not in the test measurements (e.g. {missing[:3]}); it was made from other measurements — delete it and rerun the method")
    if len(set(recon_names)) != len(recon_names):
        raise UserError(f"{path}: image names repeat; delete it and rerun the method")
    return np.array([index[n] for n in recon_names], dtype=np.int64)


def bootstrap_ci(values: np.ndarray, resamples: int, level: float, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over images (NaN values ignored)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1 or resamples <= 0:
        return float(v.mean()), float(v.mean())
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(v))  # bounds the (resamples, n) index matrix's memory
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = v[rng.integers(0, len(v), size=(stop - start, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    # The percentile interval can miss a heavily skewed sample's own mean by a hair; widen to it.
    m = float(v.mean())
    return float(min(lo, m)), float(max(hi, m))


def aggregate(per_image: pd.DataFrame, set_values: dict[str, tuple[float, str]], resamples: int, level: float, seed: int, notes: dict[str, str]) -> pd.DataFrame:
    """One row per metric: n, mean, bootstrap CI; set-level metrics carry no CI."""
    from diracbench.seeding import seed_from_string

    rows = []
    key = per_image[["dataset", "task", "method"]].iloc[0].to_dict()
    for metric in PER_IMAGE_METRICS:
        vals = per_image[metric].to_numpy(dtype=np.float64)
        rng = np.random.default_rng(seed_from_string("bootstrap", seed, key["dataset"], key["task"], metric))
        lo, hi = bootstrap_ci(vals, resamples, level, rng)
        finite = vals[~np.isnan(vals)]
        rows.append({**key, "metric": metric, "n": int(len(finite)), "mean": float(finite.mean()) if len(finite) else math.nan,
                     "ci_low": lo, "ci_high": hi, "ci_level": level, "note": notes.get(metric, "")})
    for metric in SET_METRICS:
        value, note = set_values.get(metric, (math.nan, "not computed"))
        rows.append({**key, "metric": metric, "n": int(len(per_image)), "mean": value, "ci_low": math.nan, "ci_high": math.nan,
                     "ci_level": level, "note": note})
    return pd.DataFrame(rows)


@dataclass
class ScoreBatch:
    """What a registered metric function sees: one method's reconstructions of some test images
    (one scoring batch: LPIPS, VGG and Inception features always see exactly these batches)."""

    recon: Recon
    x: np.ndarray  # ground truth of the reconstructed images (matched by name)
    y: np.ndarray  # their measurements
    operator: object  # A_1 (LinearOperator)
    sigma_1: float
    settings: dict  # the metrics rule's settings (lpips_net, lpips_upsample_below, fid, batch_size, ...)
    device: torch.device
    values: dict = field(default_factory=dict)  # per-image values computed so far, by metric
    cache: dict = field(default_factory=dict)  # shared networks (LPIPS, VGG features), across batches

    @property
    def x_hat(self) -> np.ndarray:
        return self.recon.x_hat

    @property
    def size(self) -> int:
        return int(min(self.x.shape[-2:]))

    def lpips_metric(self):
        from diracbench.metrics.perceptual import LPIPSMetric

        if "lpips" not in self.cache:
            s = self.settings
            self.cache["lpips"] = LPIPSMetric(s["lpips_net"], s["lpips_upsample_below"], device=self.device, batch_size=s["batch_size"])
        return self.cache["lpips"]

    def vgg_features(self):
        from diracbench.metrics.perceptual import VGGFeatures

        if "vgg" not in self.cache:
            s = self.settings
            self.cache["vgg"] = VGGFeatures(s["lpips_upsample_below"], device=self.device, batch_size=s["batch_size"])
        return self.cache["vgg"]


# Per-image metrics: (values (N,), protocol note) of one scoring batch.


def score_psnr(b: ScoreBatch) -> tuple[np.ndarray, str]:
    from diracbench.metrics.image_quality import psnr

    return psnr(b.x_hat, b.x), "data range 1, outputs clipped to [0, 1]"


def score_ssim(b: ScoreBatch) -> tuple[np.ndarray, str]:
    from diracbench.metrics.image_quality import ssim

    return ssim(b.x_hat, b.x), "scikit-image, Gaussian 11x11 window, sigma 1.5, data range 1"


def score_lpips(b: ScoreBatch) -> tuple[np.ndarray, str]:
    lp = b.lpips_metric()
    return lp(b.x_hat, b.x).numpy().astype(np.float64), lp.describe(b.size)


def score_dc(b: ScoreBatch) -> tuple[np.ndarray, str]:
    from diracbench.metrics.image_quality import data_consistency

    return data_consistency(b.y, b.x_hat, b.operator), f"mean (y - A_1(x_hat))^2 per image; noise floor sigma_1^2 = {b.sigma_1**2:.6g}"


def score_dc_ratio(b: ScoreBatch) -> tuple[np.ndarray, str]:
    dc = b.values["dc"] if "dc" in b.values else score_dc(b)[0]
    return dc / b.sigma_1**2, "data consistency / sigma_1^2 (1 = consistent up to the noise)"


def score_nfe(b: ScoreBatch) -> tuple[np.ndarray, str]:
    return b.recon.nfe, ""


def score_seconds(b: ScoreBatch) -> tuple[np.ndarray, str]:
    return b.recon.seconds, ""


# Set-level metrics come in two steps, so a split scored in batches or shards gives the value of
# the whole set: per batch, the features of x_hat and x (None with the reason when unavailable);
# once all batches are joined, the distance between the two feature sets.


def features_fd_vgg(b: ScoreBatch) -> tuple[dict[str, np.ndarray] | None, str]:
    feats = b.vgg_features()
    k = b.lpips_metric().upsample_factor(b.size)
    note = f"FD-VGG (not FID): Fréchet distance of ImageNet VGG16 relu5_3 average-pooled features (backbone from {feats.source})" + (f", {b.size} px images upsampled {k}x" if k > 1 else "")
    return {"x_hat": feats(b.x_hat).numpy(), "x": feats(b.x).numpy()}, note


def distance_fd_vgg(feats_x_hat: np.ndarray, feats_x: np.ndarray) -> float:
    from diracbench.metrics.perceptual import frechet_distance

    return frechet_distance(feats_x_hat, feats_x)


def features_fid(b: ScoreBatch) -> tuple[dict[str, np.ndarray] | None, str]:
    from diracbench.metrics.perceptual import inception_available, inception_features

    if not b.settings["fid"]:
        return None, "FID disabled in the config (metrics.fid: false)"
    ok, why = inception_available()
    if not ok:
        return None, f"unavailable: {why}"
    bs = b.settings["batch_size"]
    feats = {"x_hat": inception_features(b.x_hat, device=b.device, batch_size=bs), "x": inception_features(b.x, device=b.device, batch_size=bs)}
    return feats, f"clean-fid ('clean' mode, 8-bit PNGs), reconstructions vs the ground truth of the same test images; {why}"


def distance_fid(feats_x_hat: np.ndarray, feats_x: np.ndarray) -> float:
    from diracbench.metrics.perceptual import fid_from_features

    return fid_from_features(feats_x_hat, feats_x)


@dataclass
class Scores:
    """Scores of some of one method's test images, in image order: enough to finish the metrics.

    `columns`: "image", "name" and every per-image metric, one value per image. `features`: the
    per-image features a set-level metric is computed from ("<metric>:x_hat", "<metric>:x").
    `notes`: each metric's protocol note (for a set-level metric that cannot be computed, the
    reason). Scores of consecutive batches are joined with `join_scores`, so a whole split, a
    shard of it, and the shards gathered give the same numbers (see `metrics.shards`).
    """

    columns: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    notes: dict[str, str]

    def __len__(self) -> int:
        return len(self.columns["image"])


def metric_batches(n: int, batch_size: int) -> list[slice]:
    """The scoring batches of n images: LPIPS, VGG and Inception features see exactly these."""
    bs = max(1, int(batch_size))
    return [slice(s, min(n, s + bs)) for s in range(0, n, bs)]


def _take(recon: Recon, sl: slice) -> Recon:
    return Recon(recon.x_hat[sl], list(recon.names[sl]), recon.nfe[sl], recon.seconds[sl])


def score_images(recon: Recon, meas: Measurements, idx: np.ndarray, operator, sigma_1: float, settings: dict, device: torch.device, cache: dict | None = None) -> Scores:
    """Every registered metric's per-image values and set-level features for one scoring batch."""
    batch = ScoreBatch(recon, meas.x[idx], meas.y[idx], operator, sigma_1, settings, device, cache=cache if cache is not None else {})
    notes: dict[str, str] = {}
    for name in PER_IMAGE_METRICS:
        values, note = METRICS[name].compute()(batch)
        batch.values[name] = np.asarray(values)
        if note:
            notes[name] = note
    features: dict[str, np.ndarray] = {}
    for name in SET_METRICS:
        feats, note = METRICS[name].compute()(batch)
        notes[name] = note
        if feats is not None:
            features.update({f"{name}:{k}": v for k, v in feats.items()})
    columns = {"image": np.asarray(idx, dtype=np.int64), "name": np.asarray(recon.names, dtype=str), **batch.values}
    return Scores(columns, features, notes)


def join_scores(parts: list[Scores]) -> Scores:
    """Consecutive scores joined in order; every part must carry the same notes and features."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise UserError("no images were scored")
    first = parts[0]
    for p in parts[1:]:
        if p.notes != first.notes or sorted(p.features) != sorted(first.features):
            raise UserError("the scored parts disagree on the metrics' protocol (other settings or weights); rescore them all")
    return Scores(
        {k: np.concatenate([p.columns[k] for p in parts]) for k in first.columns},
        {k: np.concatenate([p.features[k] for p in parts]) for k in first.features},
        dict(first.notes),
    )


def finish_scores(scores: Scores, settings: dict) -> tuple[pd.DataFrame, dict[str, tuple[float, str]], dict[str, str]]:
    """per_image.csv's table, the set-level values from all images' features, the notes."""
    per_image = pd.DataFrame({"dataset": settings["dataset"], "task": settings["task"], "method": settings["method"], **scores.columns})
    per_image["name"] = list(scores.columns["name"])
    n = len(scores)
    notes = {k: v for k, v in scores.notes.items() if k not in SET_METRICS}
    set_values: dict[str, tuple[float, str]] = {}
    for name in SET_METRICS:
        if f"{name}:x_hat" not in scores.features:
            set_values[name] = (math.nan, scores.notes[name])
        elif n < 2:
            set_values[name] = (math.nan, "needs at least 2 images")
        else:
            set_values[name] = (METRICS[name].distance_fn()(scores.features[f"{name}:x_hat"], scores.features[f"{name}:x"]), scores.notes[name])
    return per_image, set_values, notes


def score(recon: Recon, meas: Measurements, idx: np.ndarray, operator, sigma_1: float, settings: dict, device: torch.device) -> tuple[pd.DataFrame, dict[str, tuple[float, str]], dict[str, str]]:
    """Per-image metrics, the set-level distances, and notes describing each protocol."""
    cache: dict = {}
    parts = [score_images(_take(recon, sl), meas, idx[sl], operator, sigma_1, settings, device, cache) for sl in metric_batches(len(recon.names), settings["batch_size"])]
    return finish_scores(join_scores(parts), settings)
