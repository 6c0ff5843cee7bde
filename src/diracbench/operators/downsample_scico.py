"""The same-size super-resolution's scico adapter: A_1 = (1 - r) I + r P on (N, H, W, C) batches
(P: block means replicated over their blocks) and the exact solve of (c A^T A + rho I) x = b,
which acts on the range of P and on its complement separately (A^T A = P + (1 - r)^2 (I - P))."""

from __future__ import annotations

from diracbench.scico_ops import ScicoOperator, jax_modules


def scico_downsample(family: dict, shape: tuple[int, int, int, int], blur_impl: str = "fft") -> ScicoOperator:
    jax, jnp = jax_modules()
    from scico import linop

    _, h, w, _ = shape
    f = int(family["factor"])
    r = float(family["strength_t1"])
    keep = 1.0 - r

    def project(x):
        blocks = x.reshape(x.shape[0], h // f, f, w // f, f, x.shape[-1])
        return jnp.broadcast_to(blocks.mean(axis=(2, 4), keepdims=True), blocks.shape).reshape(x.shape)

    def forward(x):
        return keep * x + r * project(x)

    A = linop.LinearOperator(input_shape=shape, output_shape=shape, input_dtype=jnp.float32, eval_fn=forward, jit=True)

    def normal_solve(b, rho, c=1.0):
        pb = project(b)
        return pb / (c + rho) + (b - pb) / (c * keep * keep + rho)

    def measurement_init(y):
        return jnp.asarray(y)  # y = P x + noise is already a same-size image

    return ScicoOperator("downsample", A, jax.jit(normal_solve), measurement_init)
