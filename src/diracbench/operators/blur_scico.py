"""The blur's scico adapter: A_1 of operator.json on (N, H, W, C) batches, for PnP-ADMM / ADMM-TV.

Whole-sample reflection padding by kernel_size // 2, then a "valid" correlation with the separable
Gaussian taps of `operators.blur` (the same float64 taps the torch operator uses). Two
implementations give the same operator: "fft" (pad, convolve by FFTs with the 2-D kernel, crop the
valid part; baselines.md §5.3) and "matrix" (X -> H_r X H_c^T with the 1-D matrices H = C P,
exactly the torch operator's arithmetic). scico derives the adjoint by JAX transposition. The
exact solve of (c A^T A + rho I) x = b comes from the SVDs of H_r and H_c.
"""

from __future__ import annotations

import numpy as np

from diracbench.errors import UserError
from diracbench.scico_ops import BLUR_IMPLS, ScicoOperator, jax_modules


def taps_and_matrices(family: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 taps g and 1-D matrices H_r, H_c = C P, from the torch operator's own construction."""
    import torch

    from diracbench.operators.blur import gaussian_taps, padded_correlation_basis

    k = int(family["kernel_size"])
    h, w = (int(v) for v in family["image_size"])
    taps = gaussian_taps(torch.tensor([float(family["std_t1"])], dtype=torch.float64), k)[0]
    H_r = torch.einsum("k,kij->ij", taps, padded_correlation_basis(h, k))
    H_c = H_r if w == h else torch.einsum("k,kij->ij", taps, padded_correlation_basis(w, k))
    return taps.numpy(), H_r.numpy(), H_c.numpy()


def scico_blur(family: dict, shape: tuple[int, int, int, int], blur_impl: str = "fft") -> ScicoOperator:
    jax, jnp = jax_modules()
    from scico import linop

    _, h, w, _ = shape
    if blur_impl not in BLUR_IMPLS:
        raise UserError(f"blur_impl {blur_impl!r} is unknown; use one of {list(BLUR_IMPLS)}")
    taps, H_r64, H_c64 = taps_and_matrices(family)
    pad = int(family["kernel_size"]) // 2
    if blur_impl == "fft":
        k = int(family["kernel_size"])
        hp, wp = h + 2 * pad, w + 2 * pad
        # Linear convolution via FFTs of the padded size: the "valid" outputs (index >= k - 1)
        # never wrap around, so no extra zero padding is needed.
        g = np.zeros((hp, wp))
        g[:k, :k] = np.outer(taps, taps)
        G = jnp.asarray(np.fft.rfft2(g)[None, :, :, None], jnp.complex64)

        def forward(x):
            xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
            full = jnp.fft.irfft2(jnp.fft.rfft2(xp, axes=(1, 2)) * G, s=(hp, wp), axes=(1, 2))
            # A symmetric kernel makes this convolution equal the torch operator's correlation.
            return full[:, k - 1 :, k - 1 :, :].astype(jnp.float32)

    else:
        H_r, H_c = jnp.asarray(H_r64, jnp.float32), jnp.asarray(H_c64, jnp.float32)

        def forward(x):
            return jnp.einsum("ih,nhwc,jw->nijc", H_r, x, H_c)

    A = linop.LinearOperator(input_shape=shape, output_shape=shape, input_dtype=jnp.float32, eval_fn=forward, jit=True)

    # A^T A = (H_r^T H_r) (x) (H_c^T H_c) is diagonalised by the right singular vectors of H_r, H_c.
    _, s_r, Vt_r = np.linalg.svd(H_r64)
    _, s_c, Vt_c = np.linalg.svd(H_c64)
    V_r, V_c = jnp.asarray(Vt_r.T, jnp.float32), jnp.asarray(Vt_c.T, jnp.float32)
    eig = jnp.asarray(np.outer(s_r**2, s_c**2)[None, :, :, None], jnp.float32)

    def normal_solve(b, rho, c=1.0):
        coef = jnp.einsum("hi,nhwc,wj->nijc", V_r, b, V_c) / (c * eig + rho)
        return jnp.einsum("ih,nhwc,jw->nijc", V_r, coef, V_c)

    def measurement_init(y):
        return jnp.asarray(y)  # a blurred image is already a plausible start

    return ScicoOperator("blur", A, jax.jit(normal_solve), measurement_init)
