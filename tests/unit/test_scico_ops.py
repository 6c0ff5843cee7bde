"""The scico/JAX operators equal the torch operators the measurements were made with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diracbench.errors import UserError
from diracbench.operators import GeometricNoise, LinearSchedule, family_from_spec, operator_spec
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.inpaint import SmoothMaskFamily
from diracbench.scico_ops import (
    BLUR_IMPLS,
    build_operator,
    check_hparams,
    configure_jax,
    jax_modules,
    per_image,
    to_nchw,
    to_nhwc,
)

configure_jax(1)

SPECS = {
    "blur-32": lambda: operator_spec(GaussianBlurFamily((32, 32), 37, LinearSchedule(0.3, 3.0)), GeometricNoise(0.01, 0.05), "deblur"),
    "blur-24x20": lambda: operator_spec(GaussianBlurFamily((24, 20), 13, LinearSchedule(0.3, 2.0)), GeometricNoise(0.01, 0.05), "deblur"),
    "mask-32": lambda: operator_spec(SmoothMaskFamily((32, 32), LinearSchedule(0.1, 6.25), 4.0), GeometricNoise(0.01, 0.05), "inpaint"),
    "mask-24x20": lambda: operator_spec(SmoothMaskFamily((24, 20), LinearSchedule(0.1, 5.0), 4.0), GeometricNoise(0.01, 0.05), "inpaint"),
}
CASES = [(name, impl) for name in sorted(SPECS) for impl in (BLUR_IMPLS if name.startswith("blur") else ("fft",))]


def _images(spec: dict, n: int, seed: int) -> np.ndarray:
    h, w = spec["image_size"]
    return np.random.default_rng(seed).random((n, 3, h, w)).astype(np.float32)


@pytest.mark.parametrize("name,impl", CASES)
def test_forward_and_adjoint_equal_the_torch_operator(name, impl):
    _, jnp = jax_modules()
    spec = SPECS[name]()
    torch_op = family_from_spec(spec).measurement_operator()
    op = build_operator(spec, 3, impl)
    x, u = _images(spec, 3, 0), _images(spec, 3, 1)
    ours = to_nchw(np.asarray(op.A(jnp.asarray(to_nhwc(x)))))
    np.testing.assert_allclose(ours, torch_op.forward(torch.from_numpy(x)).numpy(), atol=2e-6)
    ours_adj = to_nchw(np.asarray(op.A.adj(jnp.asarray(to_nhwc(u)))))
    np.testing.assert_allclose(ours_adj, torch_op.adjoint(torch.from_numpy(u)).numpy(), atol=2e-6)


@pytest.mark.parametrize("name,impl", CASES)
def test_adjoint_identity(name, impl):
    _, jnp = jax_modules()
    spec = SPECS[name]()
    op = build_operator(spec, 2, impl)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal(op.A.input_shape).astype(np.float32))
    u = jnp.asarray(rng.standard_normal(op.A.input_shape).astype(np.float32))
    lhs = float(jnp.vdot(op.A(x), u))
    rhs = float(jnp.vdot(x, op.A.adj(u)))
    scale = float(jnp.linalg.norm(op.A(x)) * jnp.linalg.norm(u))
    assert abs(lhs - rhs) <= 1e-6 * scale


def test_fft_and_matrix_blur_agree_with_the_paper_kernel():
    """61 taps, std 3 (the paper's kernel) on a non-square image: the two implementations are one operator."""
    _, jnp = jax_modules()
    spec = operator_spec(GaussianBlurFamily((96, 64), 61, LinearSchedule(0.3, 3.0)), GeometricNoise(0.01, 0.05), "deblur")
    x = jnp.asarray(np.random.default_rng(4).random((1, 96, 64, 3)).astype(np.float32))
    a = build_operator(spec, 1, "fft").A(x)
    b = build_operator(spec, 1, "matrix").A(x)
    assert float(jnp.abs(a - b).max()) < 2e-6


def test_reflect_padding_is_whole_sample_at_the_border():
    """A step edge at the border: half-sample (scipy 'reflect') padding would differ by ~1e-2 there."""
    _, jnp = jax_modules()
    spec = SPECS["blur-32"]()
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[..., :3, :] = 1.0
    torch_op = family_from_spec(spec).measurement_operator()
    ours = to_nchw(np.asarray(build_operator(spec, 1, "fft").A(jnp.asarray(to_nhwc(x)))))
    np.testing.assert_allclose(ours[..., :2, :], torch_op.forward(torch.from_numpy(x)).numpy()[..., :2, :], atol=2e-6)


@pytest.mark.parametrize("name", ["blur-32", "blur-24x20", "mask-32"])
def test_normal_solve_is_exact_per_image(name):
    _, jnp = jax_modules()
    spec = SPECS[name]()
    op = build_operator(spec, 3, "matrix")
    b = jnp.asarray(np.random.default_rng(5).standard_normal(op.A.input_shape).astype(np.float32))
    rho = per_image([0.01, 0.3, 2.0])
    c = 1.0
    x = op.normal_solve(b, rho, c)
    residual = c * op.A.adj(op.A(x)) + rho * x - b
    assert float(jnp.abs(residual).max()) < 1e-4 * float(jnp.abs(b).max())


def test_measurement_init_inverts_the_mask_with_a_floor():
    _, jnp = jax_modules()
    spec = SPECS["mask-32"]()
    op = build_operator(spec, 1, "fft")
    x = jnp.full(op.A.input_shape, 0.5, jnp.float32)
    x0 = np.asarray(op.init(op.A(x), "measurement"))
    m = np.asarray(op.mask)[..., 0]
    observed = m > 0.1
    np.testing.assert_allclose(x0[0, observed, 0], 0.5, atol=1e-5)  # exact where the mask is above the floor
    assert np.all(x0[0, ~observed, 0] <= 0.5 + 1e-6)
    np.testing.assert_allclose(np.asarray(op.init(op.A(x), "adjoint")), np.asarray(op.A(op.A(x))), atol=1e-6)


def test_layout_round_trip():
    x = np.random.default_rng(6).random((2, 3, 5, 7)).astype(np.float32)
    assert to_nhwc(x).shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(to_nchw(to_nhwc(x)), x)
    np.testing.assert_array_equal(to_nhwc(torch.from_numpy(x)), to_nhwc(x))


def test_unknown_blur_impl_and_hparams_are_user_errors():
    with pytest.raises(UserError, match="blur_impl"):
        build_operator(SPECS["blur-32"](), 1, "direct")
    with pytest.raises(UserError, match=r"needs hyper-parameters \['rho'\]"):
        check_hparams({"maxiter": 3}, ["rho", "maxiter"], "pnp-admm")
    with pytest.raises(UserError, match="does not know"):
        check_hparams({"maxiter": 3, "rho": 1, "sigma": 2}, ["rho", "maxiter"], "pnp-admm")


def test_configure_jax_sets_platform_and_single_thread(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    configure_jax(1, "cpu")
    import os

    assert os.environ["JAX_PLATFORMS"] == "cpu"
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_cpu_multi_thread_eigen=false"
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setenv("XLA_FLAGS", "")
    configure_jax(2, "cuda")
    assert os.environ["JAX_PLATFORMS"] == "cuda" and os.environ["XLA_FLAGS"] == ""
