"""Image-folder datasets in the paper's protocols (CelebA-HQ, FFHQ, ImageNet).

Each split names a protocol that turns a folder into an ordered list of image files:
- `celeba_hq`: every image of `root`, sorted, shuffled with Python's `random.seed(seed)`, cut
  80/10/10 into train/val/test; `part` picks one.
- `ffhq`: the images of the listed `subfolders` of `root` (e.g. "00000"), sorted, optionally the
  first `limit`.
- `imagenet`: `root` holds one folder per class; `part: first` takes the first image of every
  class (the paper's val split), `part: last` the last (its test split), `part: all` everything
  (training). Class order and file order are sorted by name.
- `plain`: every image of `root`, sorted, optionally the first `limit`.
Images are centre-cropped to a square and resized to `image_size` (bilinear, antialiased).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np

from diracbench.data.images import centre_crop_resize, list_images, read_rgb, sha256_of
from diracbench.data.stream import ordered_map
from diracbench.errors import UserError
from diracbench.progress import progress


def _folder(root: str, key: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"dataset folder {path} ({key}) does not exist; download the images there or set {key} to the folder that holds them")
    return path


def _nonempty(files: list[Path], where: Path, key: str) -> list[Path]:
    if not files:
        raise UserError(f"dataset folder {where} ({key}) contains no images (.png/.jpg/...); check the path")
    return files


def list_split_files(spec: dict, key: str) -> list[tuple[str, Path]]:
    """(name, path) pairs of one split; `name` is the path relative to the protocol's root."""
    protocol = spec["protocol"]
    root = _folder(spec["root"], f"{key}.root")
    limit = spec.get("limit")
    if protocol == "celeba_hq":
        files = _nonempty(sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg")), root, f"{key}.root")
        rng = random.Random(int(spec.get("seed", 0)))
        files = list(files)
        rng.shuffle(files)
        n_train, n_val = int(0.8 * len(files)), int(0.1 * len(files))
        parts = {"train": files[:n_train], "val": files[n_train : n_train + n_val], "test": files[n_train + n_val :]}
        files = parts[spec["part"]]
    elif protocol == "ffhq":
        files = []
        for sub in spec["subfolders"]:
            folder = root / sub
            if not folder.is_dir():
                raise UserError(f"FFHQ sub-folder {folder} ({key}.subfolders) does not exist; FFHQ should be laid out as {root}/00000 ... {root}/00069")
            files.extend(_nonempty(list_images(folder), folder, f"{key}.subfolders"))
    elif protocol == "imagenet":
        classes = sorted(p for p in root.iterdir() if p.is_dir())
        if not classes:
            raise UserError(f"ImageNet folder {root} ({key}.root) has no class sub-folders; it should hold one folder per class (n01440764, ...)")
        files = []
        for cls in classes:
            images = _nonempty(list_images(cls), cls, f"{key}.root")
            files.extend({"first": images[:1], "last": images[-1:], "all": images}[spec["part"]])
        if spec["part"] != "all":
            random.Random(0).shuffle(files)  # only changes the numbering, as in the official code
    elif protocol == "plain":
        files = _nonempty(list_images(root), root, f"{key}.root")
    else:
        raise UserError(f"{key}.protocol {protocol!r} is unknown; use celeba_hq, ffhq, imagenet or plain")
    if limit is not None:
        if limit > len(files):
            raise UserError(f"{key}.limit asks for {limit} images but {root} provides only {len(files)} for this split")
        files = files[:limit]
    return [(str(p.relative_to(root)), p) for p in files]


def stream_folder_split(split: str, pairs: list[tuple[str, Path]], size: int, threads: int, alpha: str = "refuse") -> Iterator[tuple[np.ndarray, dict]]:
    """(pixels, manifest row) of every listed image, in order; decoded and hashed on `threads`
    threads with a bounded window, so memory does not depend on the number of images. `alpha` is
    the dataset's policy for transparent images (see images.read_rgb)."""

    def load(item: tuple[int, tuple[str, Path]]) -> tuple[np.ndarray, dict]:
        i, (name, path) = item
        pixels = centre_crop_resize(read_rgb(path, alpha), size, path)
        return pixels, {"index": i, "name": name, "split": split, "source": str(path), "sha256": sha256_of(path), "crop": "centre", "scale": ""}

    decoded = ordered_map(load, enumerate(pairs), threads)
    yield from progress(decoded, total=len(pairs), desc=f"{split} images", unit="img")
