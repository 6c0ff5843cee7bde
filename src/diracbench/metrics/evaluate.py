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

REFERENCE_METHOD = "y"

# Per-image columns of per_image.csv, in order; `higher` says which direction is better.
PER_IMAGE_METRICS = ("psnr", "ssim", "lpips", "dc", "dc_ratio", "nfe", "seconds")
SET_METRICS = ("fd_vgg", "fid")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "fd_vgg": False, "fid": False}


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
class Scores:
    """Scores of some of one method's test images, in image order: enough to finish the metrics.

    `columns`: "image", "name" and every per-image metric, one value per image. `features`: the
    per-image features a set-level metric is computed from ("fd_vgg:x_hat", "fd_vgg:x", "fid:x_hat",
    "fid:x"). `notes`: each metric's protocol note (for a set-level metric that cannot be computed,
    the reason). Scores of consecutive batches are joined with `join_scores`, so a whole split, a
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


def score_images(recon: Recon, meas: Measurements, idx: np.ndarray, operator, sigma_1: float, settings: dict, device: torch.device) -> Scores:
    """Per-image metrics and set-level features of these images (call it on one scoring batch)."""
    from diracbench.metrics.image_quality import data_consistency, psnr, ssim
    from diracbench.metrics.perceptual import LPIPSMetric, VGGFeatures, inception_available, inception_features

    x = meas.x[idx]
    y = meas.y[idx]
    x_hat = recon.x_hat
    size = int(min(x.shape[-2:]))
    bs = settings["batch_size"]
    lp = LPIPSMetric(settings["lpips_net"], settings["lpips_upsample_below"], device=device, batch_size=bs)
    dc = data_consistency(y, x_hat, operator)
    columns = {
        "image": np.asarray(idx, dtype=np.int64),
        "name": np.asarray(recon.names, dtype=str),
        "psnr": psnr(x_hat, x),
        "ssim": ssim(x_hat, x),
        "lpips": lp(x_hat, x).numpy().astype(np.float64),
        "dc": dc,
        "dc_ratio": dc / sigma_1**2,
        "nfe": recon.nfe,
        "seconds": recon.seconds,
    }
    notes = {
        "lpips": lp.describe(size),
        "dc": f"mean (y - A_1(x_hat))^2 per image; noise floor sigma_1^2 = {sigma_1**2:.6g}",
        "dc_ratio": "data consistency / sigma_1^2 (1 = consistent up to the noise)",
        "ssim": "scikit-image, Gaussian 11x11 window, sigma 1.5, data range 1",
        "psnr": "data range 1, outputs clipped to [0, 1]",
    }
    feats = VGGFeatures(settings["lpips_upsample_below"], device=device, batch_size=bs)
    k = lp.upsample_factor(size)
    features = {"fd_vgg:x_hat": feats(x_hat).numpy(), "fd_vgg:x": feats(x).numpy()}
    notes["fd_vgg"] = f"FD-VGG (not FID): Fréchet distance of ImageNet VGG16 relu5_3 average-pooled features (backbone from {feats.source})" + (f", {size} px images upsampled {k}x" if k > 1 else "")
    if not settings["fid"]:
        notes["fid"] = "FID disabled in the config (metrics.fid: false)"
    else:
        ok, why = inception_available()
        if not ok:
            notes["fid"] = f"unavailable: {why}"
        else:
            features["fid:x_hat"] = inception_features(x_hat, device=device, batch_size=bs)
            features["fid:x"] = inception_features(x, device=device, batch_size=bs)
            notes["fid"] = f"clean-fid ('clean' mode, 8-bit PNGs), reconstructions vs the ground truth of the same test images; {why}"
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
    from diracbench.metrics.perceptual import fid_from_features, frechet_distance

    per_image = pd.DataFrame({"dataset": settings["dataset"], "task": settings["task"], "method": settings["method"], **scores.columns})
    per_image["name"] = list(scores.columns["name"])
    n = len(scores)
    notes = {k: v for k, v in scores.notes.items() if k not in SET_METRICS}
    set_values: dict[str, tuple[float, str]] = {}
    if n >= 2:
        set_values["fd_vgg"] = (frechet_distance(scores.features["fd_vgg:x_hat"], scores.features["fd_vgg:x"]), scores.notes["fd_vgg"])
    else:
        set_values["fd_vgg"] = (math.nan, "needs at least 2 images")
    if "fid:x_hat" not in scores.features:
        set_values["fid"] = (math.nan, scores.notes["fid"])
    elif n < 2:
        set_values["fid"] = (math.nan, "needs at least 2 images")
    else:
        set_values["fid"] = (fid_from_features(scores.features["fid:x_hat"], scores.features["fid:x"]), scores.notes["fid"])
    return per_image, set_values, notes


def score(recon: Recon, meas: Measurements, idx: np.ndarray, operator, sigma_1: float, settings: dict, device: torch.device) -> tuple[pd.DataFrame, dict[str, tuple[float, str]], dict[str, str]]:
    """Per-image metrics, the set-level distances, and notes describing each protocol."""
    parts = [score_images(_take(recon, sl), meas, idx[sl], operator, sigma_1, settings, device) for sl in metric_batches(len(recon.names), settings["batch_size"])]
    return finish_scores(join_scores(parts), settings)
