"""The smooth mask's scico adapter: A_1 = `linop.Diagonal(m)`, the same mask on every channel,
with the elementwise exact solve of (c A^T A + rho I) x = b."""

from __future__ import annotations

import numpy as np

from diracbench.scico_ops import ScicoOperator, jax_modules

# Floor on the mask for the "measurement" initialisation y / max(m, floor) (baselines.md §5.4):
# pixels the mask nearly removes start from a bounded, clipped guess instead of amplified noise.
MASK_INIT_FLOOR = 0.1


def mask_values(family: dict) -> np.ndarray:
    """(H, W) float64 mask m_1 from the torch operator's construction."""
    import torch

    from diracbench.operators.inpaint import smooth_masks

    m = smooth_masks(
        torch.tensor([float(family["mask_std_t1"])], dtype=torch.float64),
        tuple(int(v) for v in family["image_size"]),
        float(family["mask_power"]),
        tuple(int(v) for v in family["mask_centre"]),
        truncate=float(family.get("truncate_std", 4.0)),
    )
    return m[0, 0].numpy()


def scico_mask(family: dict, shape: tuple[int, int, int, int], blur_impl: str = "fft") -> ScicoOperator:
    _, jnp = jax_modules()
    from scico import linop

    m = jnp.asarray(mask_values(family), dtype=jnp.float32)[:, :, None]
    A = linop.Diagonal(m, input_shape=shape, jit=True)

    def normal_solve(b, rho, c=1.0):
        return b / (c * m * m + rho)

    def measurement_init(y):
        return jnp.clip(y / jnp.maximum(m, MASK_INIT_FLOOR), 0.0, 1.0)

    return ScicoOperator("inpaint", A, normal_solve, measurement_init, mask=m)
