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


def read_rgb(path: Path) -> Image.Image:
    """Decode fully (truncated files fail here, not later) and convert to RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {path}: {err}; replace the file with a valid image or remove it from the folder") from None


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
