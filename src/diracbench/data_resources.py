"""What the `prepare_data` rule asks a scheduler for: threads, memory and walltime per dataset.

Workflow plumbing, kept outside `data/` on purpose: it is no `code=` input, so retuning a request
reruns nothing.

Memory no longer depends on the dataset (images stream to disk, see data/stream.py): the process
holds the interpreter (~150 MB), one manifest row at a time and a decode window
of 2 x threads images. A decoded source image costs at most ~4 copies of width x height x 3 bytes
(decode, RGB conversion, crop, resize input), ~150 MB for a 12-megapixel ImageNet outlier, so
16 in flight stay under ~2.5 GB: the constant PREPARE_MEM_MB covers any dataset of the protocols.

The walltime does depend on the dataset: the number of images, estimated here by listing the
configured folders (names only, no per-file stat, so ImageNet's 1.28M files list in seconds; the
rule evaluates this only when the job has to run), times a per-image cost. Measured on a 2-core
Xeon, decode + crop/resize + SHA-256 takes 2 ms (256 px PNG), 3.5 ms (ImageNet-size JPEG) and
25 ms (1024 px FFHQ PNG); SECONDS_PER_IMAGE doubles the worst of them to leave room for a slow
shared filesystem.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from diracbench.data.images import IMAGE_SUFFIXES

PREPARE_MEM_MB = 4000
FOLDER_THREADS = 8  # decode threads for image-folder datasets (Snakemake caps them at --cores)
PHOTO_THREADS = 2  # the embedded photos: a second of work
SECONDS_PER_IMAGE = 0.05  # per decode thread
MIN_RUNTIME_MIN, OVERHEAD_MIN = 60, 10


def _image_names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    except OSError:  # a missing folder: the job itself reports it in one line
        return []


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_dir()]
    except OSError:
        return []


def split_image_count(spec: dict) -> int:
    """An estimate of the number of images one folder split yields (exact for the listed protocols
    unless files are unreadable); 0 when the folder is not there yet."""
    root = Path(spec.get("root", "")).expanduser()
    protocol = spec.get("protocol")
    if protocol == "celeba_hq":
        total = sum(len(_image_names(Path(d))) for d, _, _ in os.walk(root))
        n = {"train": int(0.8 * total), "val": int(0.1 * total)}.get(spec.get("part"), total - int(0.8 * total) - int(0.1 * total))
    elif protocol == "ffhq":
        n = sum(len(_image_names(root / sub)) for sub in spec.get("subfolders", []))
    elif protocol == "imagenet":
        classes = _subfolders(root)
        n = sum(len(_image_names(c)) for c in classes) if spec.get("part") == "all" else len(classes)
    else:
        n = len(_image_names(root))
    limit = spec.get("limit")
    return min(n, int(limit)) if limit is not None else n


def dataset_image_count(dataset: dict) -> int:
    source = dataset["source"]
    if source["kind"] != "folders":
        return 0
    return sum(split_image_count(source[split]) for split in ("train", "val", "test"))


def prepare_threads(dataset: dict) -> int:
    return FOLDER_THREADS if dataset["source"]["kind"] == "folders" else PHOTO_THREADS


def prepare_runtime_min(dataset: dict, threads: int) -> int:
    """Walltime in minutes: never below today's 60, growing with images / threads."""
    seconds = dataset_image_count(dataset) * SECONDS_PER_IMAGE / max(1, int(threads))
    return max(MIN_RUNTIME_MIN, OVERHEAD_MIN + math.ceil(seconds / 60))
