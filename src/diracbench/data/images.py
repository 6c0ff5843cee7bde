"""Reading one image file: decode, check, centre-crop to a square and resize (paper protocol)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diracbench.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


ALPHA_POLICIES = ("refuse", "white", "black")
# Modes converted by Pillow itself without loss of meaning (bilevel, grey, colour spaces).
_PLAIN_MODES = ("1", "L", "RGB", "CMYK", "YCbCr")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def read_rgb(path: Path, alpha: str = "refuse") -> Image.Image:
    """Decode fully (truncated files fail here, not later) to 8-bit RGB, honouring the mode.

    16-bit grey is scaled by 255/65535 (not clipped at 255), float grey must lie in [0, 1],
    palettes are looked up, grey is replicated. Transparency: a fully opaque alpha channel is
    dropped; otherwise `alpha` decides — 'refuse' (default: the pixels under it are unknown),
    or composite onto a 'white' or 'black' background. Any other mode is refused.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return decode_rgb(img, path, alpha)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {path}: {err}; replace the file with a valid image or remove it from the folder") from None


def decode_rgb(img: Image.Image, path: Path, alpha: str = "refuse") -> Image.Image:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in _PLAIN_MODES:
        return img.convert("RGB")
    if mode in _ALPHA_MODES:
        return _drop_alpha(np.asarray(img.convert("RGBA")), path, mode, alpha)
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(img).astype(np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise UserError(f"image {path} is a {mode} integer image with values in [{values.min():g}, {values.max():g}], outside 16-bit [0, 65535]; convert it to 8- or 16-bit")
        return _grey(values / 65535.0)
    if mode == "F":
        values = np.asarray(img).astype(np.float64)
        lo, hi = np.nanmin(values) if values.size else 0.0, np.nanmax(values) if values.size else 0.0
        if not np.isfinite(values).all() or lo < 0.0 or hi > 1.0:
            raise UserError(f"image {path} is a float image with values in [{lo:g}, {hi:g}]; float images must hold finite values in [0, 1] (rescale it or save it as 8/16-bit)")
        return _grey(values)
    raise UserError(f"image {path} has the unsupported mode {mode}; convert it to 8-bit RGB (or grey, 16-bit grey, float grey in [0, 1]) or remove it")


def _grey(unit: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(unit * 255.0).astype(np.uint8), mode="L").convert("RGB")


def _drop_alpha(rgba: np.ndarray, path: Path, mode: str, alpha: str) -> Image.Image:
    a = rgba[..., 3]
    if (a == 255).all():
        return Image.fromarray(np.ascontiguousarray(rgba[..., :3]), mode="RGB")
    if alpha not in ALPHA_POLICIES:
        raise UserError(f"alpha policy {alpha!r} is unknown; use one of {list(ALPHA_POLICIES)}")
    if alpha == "refuse":
        raise UserError(
            f"image {path} has transparent pixels (mode {mode}); set datasets.<name>.source.alpha to white or black "
            "to composite it onto that background, or remove the image"
        )
    background = 255.0 if alpha == "white" else 0.0
    w = a[..., None].astype(np.float64) / 255.0
    out = np.round(rgba[..., :3].astype(np.float64) * w + background * (1.0 - w))
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def centre_crop_resize(img: Image.Image, size: int, path: Path) -> np.ndarray:
    """Centre crop to the shorter side, bilinear (antialiased) resize to size x size -> uint8 (3, H, W)."""
    w, h = img.size
    if min(w, h) < size:
        raise UserError(
            f"image {path} is {w}x{h}, smaller than the configured image_size {size}; "
            "remove it from the folder or lower the dataset's image_size"
        )
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
