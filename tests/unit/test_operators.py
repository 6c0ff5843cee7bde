"""Blur- and mask-specific operator tests (scipy reference, official taps, paper statistics) and
the severity schedules; the contract every kind shares is tests/unit/test_operator_contract.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from diracbench.errors import UserError
from diracbench.operators import (
    GaussianBlurFamily,
    GeometricNoise,
    LinearSchedule,
    SmoothMaskFamily,
    TableSchedule,
    family_from_config,
    family_from_spec,
    operator_spec,
)
from diracbench.operators.blur import gaussian_taps


def smooth_images(shape, seed=0) -> torch.Tensor:
    """Natural-image-like test batch: smoothed noise (so blurring visibly changes it)."""
    g = np.random.default_rng(seed).random(shape)
    return torch.from_numpy(scipy.ndimage.gaussian_filter(g, sigma=(0, 0, 1.0, 1.0)))


def test_mask_is_exactly_the_identity_at_zero():
    fam = SmoothMaskFamily((24, 20), LinearSchedule(0.1, 5.0), 4.0, dtype=torch.float64)
    x = smooth_images((2, 3, 24, 20), seed=3)
    assert torch.equal(fam.apply(x, 0.0), x)
    assert torch.equal(fam.apply(x, torch.zeros(2, dtype=torch.float64)), x)


def test_blur_matches_scipy_mirror_correlation():
    fam = GaussianBlurFamily((32, 32), 37, LinearSchedule(0.3, 3.0), dtype=torch.float64)
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    g = gaussian_taps(torch.tensor([3.0]), 37)[0].numpy()
    k = np.outer(g, g)
    ref = np.stack([scipy.ndimage.correlate(x[0, c].numpy(), k, mode="mirror") for c in range(3)])
    assert np.allclose(fam.apply(x, 1.0)[0].numpy(), ref, atol=1e-12)


def test_blur_preserves_constants_and_taps_follow_official_rule():
    fam = GaussianBlurFamily((32, 32), 37, LinearSchedule(0.3, 3.0))
    ones = torch.ones(1, 3, 32, 32)
    assert torch.allclose(fam.apply(ones, 1.0), ones, atol=1e-6)
    g = gaussian_taps(torch.tensor([0.3]), 61)[0]
    assert int((g > 0).sum()) == 5  # radius floor(6*0.3 + 0.5) = 2
    assert abs(float(g[30]) - 0.9923) < 1e-4  # dirac-method.md §2: centre weight of the 1-D taps at s = 0.3
    g3 = gaussian_taps(torch.tensor([3.0]), 61)[0]
    assert int((g3 > 0).sum()) == 37 and abs(float(g3.sum()) - 1) < 1e-12


def test_mask_matches_closed_form_and_paper_statistics():
    fam = SmoothMaskFamily((256, 256), LinearSchedule(0.1, 50.0), 4.0, dtype=torch.float64)
    m = fam.at(1.0).mask[0, 0]
    assert float(m[128, 128]) == 0.0
    i, j = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    closed = (1 - torch.exp(-((i - 128) ** 2 + (j - 128) ** 2) / (2 * 50.0**2))) ** 4
    assert torch.allclose(m, closed.to(m.dtype), atol=1e-12)
    assert abs(float(m.mean()) - 0.520) < 1e-3  # baselines.md §1.2
    assert abs(float((m < 0.5).double().mean()) - 0.440) < 1e-3


def test_noise_schedule_end_points():
    noise = GeometricNoise(0.01, 0.05)
    assert abs(float(noise(0.0)) - 0.01) < 1e-15 and abs(float(noise(1.0)) - 0.05) < 1e-15
    assert abs(float(noise(0.5)) - 0.01 * 5**0.5) < 1e-15


def test_table_schedule_interpolates_and_validates():
    table = TableSchedule.from_rows([0.0, 0.5, 1.0], [0.3, 1.0, 3.0])
    assert torch.allclose(table(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])), torch.tensor([0.3, 0.65, 1.0, 2.0, 3.0], dtype=torch.float64))
    with pytest.raises(UserError):
        TableSchedule.from_rows([0.0, 0.7, 0.6, 1.0], [1, 2, 3, 4])
    with pytest.raises(UserError):
        TableSchedule.from_rows([0.1, 1.0], [1, 2])


def test_spec_round_trip_and_schedule_endpoint_check():
    fam = family_from_config({"kind": "blur", "kernel_size": 37, "std_min": 0.3, "std_max": 3.0}, 32)
    spec = operator_spec(fam, GeometricNoise(0.01, 0.05), "deblur")
    rebuilt = family_from_spec(spec)
    x = smooth_images((1, 3, 32, 32)).float()
    assert torch.allclose(rebuilt.apply(x, 1.0), fam.apply(x, 1.0))
    ok = TableSchedule.from_rows([0.0, 0.3, 1.0], [0.3, 0.5, 3.0])
    assert torch.allclose(family_from_spec(spec, severity=ok).apply(x, 1.0), fam.apply(x, 1.0))
    with pytest.raises(UserError, match="measurements use"):
        family_from_spec(spec, severity=TableSchedule.from_rows([0.0, 1.0], [0.3, 2.0]))


def test_padding_larger_than_image_is_a_clear_error():
    with pytest.raises(UserError, match="kernel_size"):
        GaussianBlurFamily((16, 16), 37, LinearSchedule(0.3, 3.0))
