"""Writing a split without holding it in memory: ordered parallel decode into an on-disk .npy.

A split's pixels go to disk image by image and its manifest row by row, so `prepare_data`
needs memory for the decode window (a few images per thread), not for the dataset: FFHQ's
4.7 GB or ImageNet's 252 GB train split passes through a process of a few hundred MB.

Why plain sequential writes rather than a writable `open_memmap`: the pages of a file mapping
that a process has dirtied count towards its resident set (and the job's memory limit) until the
kernel writes them back and drops them, so filling a memmap makes the peak RSS grow with the split
after all. Appending to the file after numpy's own header gives the same bytes as `np.save` of the
whole array and leaves the written data to the page cache.
"""

from __future__ import annotations

import collections
import csv
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int, window: int | None = None) -> Iterator[R]:
    """fn over items on `threads` threads, results in input order, at most `window` in flight.

    ThreadPoolExecutor.map submits every item at once and keeps every finished result until the
    consumer reaches it, which is memory proportional to the dataset; this keeps a fixed window.
    Threads suffice: Pillow's decoders and resampling and hashlib release the GIL.
    """
    threads = max(1, int(threads))
    window = max(1, window if window is not None else 2 * threads)
    pending: collections.deque[Future] = collections.deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        try:
            for item in source:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            # On an error (a bad image) stop at once: queued decodes are dropped, not finished.
            for fut in pending:
                fut.cancel()


class NpyWriter:
    """Appends images to a uint8 (N, C, H, W) .npy file whose shape is known up front.

    The header is numpy's (the same one `np.save` writes for that array), so the file is
    byte-identical to saving the whole array at once and loads with np.load / mmap_mode.
    """

    def __init__(self, path: str | Path, shape: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.written = 0
        self._image_bytes = int(np.prod(self.shape[1:]))
        self._fh = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._fh, header)

    def write(self, pixels: np.ndarray) -> None:
        """One image (C, H, W) or a block of images (n, C, H, W), uint8."""
        block = np.ascontiguousarray(pixels, dtype=np.uint8)
        if block.shape == self.shape[1:]:
            block = block[None]
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"image block of shape {block.shape} does not fit an array of shape {self.shape}")
        if self.written + len(block) > self.shape[0]:
            raise ValueError(f"more than the announced {self.shape[0]} images written")
        self._fh.write(block.tobytes())
        self.written += len(block)

    def close(self) -> None:
        self._fh.close()
        if self.written != self.shape[0]:
            raise ValueError(f"{self.written} images written where {self.shape[0]} were announced")

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()


def write_split(npy_path: Path, manifest_path: Path, shape: Sequence[int], items: Iterable[tuple[np.ndarray, dict]], fields: Sequence[str]) -> int:
    """Stream (pixels, manifest row) pairs into a .npy and a manifest CSV; returns the count.

    The CSV bytes equal csv.DictWriter's output collected in memory (newline="" keeps its \\r\\n).
    """
    with NpyWriter(npy_path, shape) as npy, open(manifest_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        for pixels, row in items:
            npy.write(pixels)
            writer.writerow(row)
    return npy.written
