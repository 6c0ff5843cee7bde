"""The embedded offline dataset: square tiles cut from photos that scikit-image and scikit-learn
ship inside their packages (public-domain / freely licensed sample images).

Splits are made by *source photo*, so no photo contributes to two splits. Photos are first
rescaled (so a small tile shows structure rather than a few pixels of texture), then tiled;
nearly flat tiles (the black around the retina, empty sky) are skipped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from diracbench.data.images import read_rgb, sha256_of
from diracbench.errors import UserError

# photo name -> (package, file names). Stereo pairs count as one photo so they share a split.
PHOTOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "astronaut": ("skimage", ("astronaut.png",)),
    "chelsea": ("skimage", ("chelsea.png",)),
    "coffee": ("skimage", ("coffee.png",)),
    "hubble_deep_field": ("skimage", ("hubble_deep_field.jpg",)),
    "immunohistochemistry": ("skimage", ("ihc.png",)),
    "motorcycle": ("skimage", ("motorcycle_left.png", "motorcycle_right.png")),
    "retina": ("skimage", ("retina.jpg",)),
    "rocket": ("skimage", ("rocket.jpg",)),
    "china": ("sklearn", ("china.jpg",)),
    "flower": ("sklearn", ("flower.jpg",)),
}


def _package_folder(package: str) -> Path:
    module = {"skimage": "skimage.data", "sklearn": "sklearn.datasets"}[package]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the photos dataset needs the {package!r} package installed (pip install scikit-image scikit-learn)")
    base = Path(list(spec.submodule_search_locations)[0])
    return base / "images" if package == "sklearn" else base


def photo_files(name: str) -> list[Path]:
    if name not in PHOTOS:
        raise UserError(f"unknown photo {name!r} in datasets.<name>.photos.splits; choose from {sorted(PHOTOS)}")
    package, files = PHOTOS[name]
    folder = _package_folder(package)
    paths = [folder / f for f in files]
    for p in paths:
        if not p.is_file():
            raise UserError(f"photo file {p} is missing from the installed {package} package; reinstall it (pip install --force-reinstall {'scikit-image' if package == 'skimage' else 'scikit-learn'})")
    return paths


@dataclass(frozen=True)
class Tile:
    name: str
    source: Path
    top: int
    left: int
    pixels: np.ndarray  # uint8 (3, S, S)


def cut_tiles(path: Path, photo: str, size: int, stride: int, scale: float, min_std: float) -> list[Tile]:
    img = read_rgb(path)
    if scale != 1.0:
        w, h = img.size
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    _, h, w = arr.shape
    tiles = []
    for top in range(0, h - size + 1, stride):
        for left in range(0, w - size + 1, stride):
            patch = arr[:, top : top + size, left : left + size]
            if patch.std() / 255.0 < min_std:
                continue
            tiles.append(Tile(f"{photo}/{path.stem}_y{top:04d}_x{left:04d}", path, top, left, patch.copy()))
    return tiles


def check_split_photos(splits: dict[str, list[str]]) -> None:
    seen: dict[str, str] = {}
    for split, names in splits.items():
        for name in names:
            photo_files(name)
            if name in seen:
                raise UserError(f"photo {name!r} is listed in both the {seen[name]!r} and {split!r} splits; a photo may appear in one split only")
            seen[name] = split


def build_photo_split(split: str, names: list[str], size: int, scale: float, stride: int, min_std: float, limit: int | None, seed: int) -> tuple[np.ndarray, list[dict]]:
    """Tiles of one split; with a limit, a seeded subset (kept in original order)."""
    tiles: list[Tile] = []
    for name in names:
        for path in photo_files(name):
            tiles.extend(cut_tiles(path, name, size, stride, scale, min_std))
    if not tiles:
        raise UserError(f"the {split!r} split produced no tiles; add photos to it or lower min_tile_std / image_size")
    if limit is not None and limit < len(tiles):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(tiles), size=limit, replace=False))
        tiles = [tiles[i] for i in keep]
    elif limit is not None and limit > len(tiles):
        raise UserError(f"the {split!r} split has only {len(tiles)} tiles but {limit} were requested; lower the limit or add photos")
    hashes = {p: sha256_of(p) for p in {t.source for t in tiles}}
    rows = [
        {"index": i, "name": t.name, "split": split, "source": f"{PHOTOS[t.name.split('/')[0]][0]}:{t.source.name}", "sha256": hashes[t.source], "crop": f"{t.top},{t.left},{size},{size}", "scale": scale}
        for i, t in enumerate(tiles)
    ]
    return np.stack([t.pixels for t in tiles]), rows
