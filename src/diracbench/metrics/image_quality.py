"""Per-image distortion metrics: PSNR, SSIM and data consistency, on outputs clipped to [0, 1].

Every function takes (B, C, H, W) batches and returns one value per image (PSNR and data
consistency keep the array type they are given; SSIM returns float64 numpy). The reconstruction is clipped to [0, 1] first (the paper
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


def _is_jax(a) -> bool:
    return type(a).__module__.startswith(("jax", "jaxlib"))


def psnr(x_hat, x):
    """10 log10(1 / MSE) per image of clip(x_hat) against clip(x), MSE over all pixels and
    channels (data range 1). The one PSNR of diracbench: tables, tuning, trajectories, bench.

    An exact reconstruction gives +inf (as scikit-image does; no cap). Works on the array type it
    is given and returns the same type: numpy (computed in float64, as the tables report it),
    torch or JAX (computed in the input's dtype and device, as trajectories log it).
    """
    if isinstance(x_hat, torch.Tensor):
        mse = (x_hat.clamp(0, 1) - x.clamp(0, 1)).square().flatten(1).mean(1)
        return 10 * torch.log10(1.0 / mse)
    if _is_jax(x_hat):
        import jax.numpy as jnp

        mse = jnp.mean((jnp.clip(x_hat, 0.0, 1.0) - jnp.clip(x, 0.0, 1.0)) ** 2, axis=tuple(range(1, x_hat.ndim)))
        return 10.0 * jnp.log10(1.0 / mse)
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


def data_consistency(y, x_hat, forward):
    """mean((y - A_1(clip(x_hat)))^2) per image: the one data-consistency measure of diracbench
    (tables, trajectories, figures); compare it with the noise floor sigma_1^2.

    `forward` is the measurement operator A_1 (a `LinearOperator`, anything with `.forward`, or
    a plain callable). Like `psnr`, it computes in the array type it is given: numpy inputs in
    float64 (the tables), torch or JAX inputs in their own dtype (trajectories).
    """
    apply = forward.forward if hasattr(forward, "forward") else forward
    if isinstance(x_hat, torch.Tensor):
        return (y - apply(x_hat.clamp(0, 1))).square().flatten(1).mean(1)
    if _is_jax(x_hat):
        import jax.numpy as jnp

        return jnp.mean((y - apply(jnp.clip(x_hat, 0.0, 1.0))) ** 2, axis=tuple(range(1, x_hat.ndim)))
    yt = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    xt = torch.as_tensor(_as_numpy(x_hat, "x_hat"), dtype=torch.float64)
    if yt.shape != xt.shape:
        raise ValueError(f"shapes differ: y {tuple(yt.shape)} vs x_hat {tuple(xt.shape)}")
    resid = (yt - apply(xt).to(torch.float64)) ** 2
    return resid.reshape(len(yt), -1).mean(dim=1).numpy()
