"""Per-image distortion metrics: PSNR, SSIM and data consistency, on outputs clipped to [0, 1].

Every function takes (B, C, H, W) batches as torch tensors or numpy arrays and returns a float64
numpy array with one value per image. The reconstruction is clipped to [0, 1] first (the paper
clips every output before its metrics); the reference is clipped too, so a slightly out-of-range
ground truth cannot produce a PSNR above the clean-image ceiling.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

ImageBatch = Union[torch.Tensor, np.ndarray]


def _as_numpy(x: ImageBatch, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) batch, got shape {arr.shape}")
    return np.clip(arr.astype(np.float64, copy=False), 0.0, 1.0)


def _pair(x_hat: ImageBatch, x: ImageBatch) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_numpy(x_hat, "x_hat"), _as_numpy(x, "x")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: x_hat {a.shape} vs x {b.shape}")
    return a, b


def psnr(x_hat: ImageBatch, x: ImageBatch) -> np.ndarray:
    """10 log10(1 / MSE) per image, MSE over all pixels and channels (data range 1).

    An exact reconstruction gives +inf, as scikit-image does; aggregates should report it as such.
    """
    a, b = _pair(x_hat, x)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def ssim(x_hat: ImageBatch, x: ImageBatch) -> np.ndarray:
    """SSIM per image: scikit-image, Gaussian 11x11 window (sigma 1.5), K1 0.01, K2 0.03,
    population covariances, data range 1, channels averaged — Wang et al. (2004), the setting
    torchmetrics and the official evaluation use."""
    from skimage.metrics import structural_similarity

    a, b = _pair(x_hat, x)
    return np.array(
        [
            structural_similarity(
                ai, bi, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, K1=0.01, K2=0.03,
            )
            for ai, bi in zip(a, b)
        ],
        dtype=np.float64,
    )


def data_consistency(y: ImageBatch, x_hat: ImageBatch, operator) -> np.ndarray:
    """mean((y - A_1(clip(x_hat)))^2) per image; compare with the noise floor sigma_1^2.

    `operator` is the measurement's `LinearOperator` (family_from_spec(...).measurement_operator()).
    A reconstruction consistent with y up to the noise has a value near sigma_1^2.
    """
    yt = torch.as_tensor(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y), dtype=torch.float64)
    xt = torch.as_tensor(_as_numpy(x_hat, "x_hat"), dtype=torch.float64)
    if yt.shape != xt.shape:
        raise ValueError(f"shapes differ: y {tuple(yt.shape)} vs x_hat {tuple(xt.shape)}")
    resid = (yt - operator.forward(xt).to(torch.float64)) ** 2
    return resid.reshape(len(yt), -1).mean(dim=1).numpy()

