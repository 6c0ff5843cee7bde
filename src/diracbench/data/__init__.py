"""Datasets: each split is one uint8 array (N, C, H, W) plus a manifest naming every image.

`results/<dataset>/data/<split>.npy` holds the pixels (memory-mappable, so large training sets
need not fit in RAM) and `<split>_manifest.csv` the image name, split, source file and the
SHA-256 of that source file, so anyone can see exactly which images were used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diracbench.errors import UserError

SPLITS = ("train", "val", "test")


def load_split(path: str | Path, mmap: bool = True) -> np.ndarray:
    """The uint8 (N, C, H, W) array of one split."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run the 'prepare_data' rule (python -m diracbench.data) first")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as err:
        raise UserError(f"{path} is not a readable .npy array ({err}); delete it and rerun 'prepare_data'") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3:
        raise UserError(f"{path} holds {arr.dtype} {arr.shape}, expected uint8 (N, 3, H, W); delete it and rerun 'prepare_data'")
    return arr


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return np.asarray(arr, dtype=np.float32) / 255.0
