"""`python -m diracbench.data`: build the train/val/test arrays and manifests of one dataset.

Example (what the `prepare_data` rule runs):
    python -m diracbench.data --settings '{"name": "photos", "image_size": 32, "seed": 0, "source": {...}}' \
        --out-dir results/photos/data
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from diracbench import cli
from diracbench.data import SPLITS
from diracbench.data.folders import list_split_files, stream_folder_split
from diracbench.data.overlap import SplitHashes, check_overlap, near_bits_of
from diracbench.data.photos import build_photo_split, check_split_photos
from diracbench.data.stream import write_split
from diracbench.errors import UserError
from diracbench.io import OutputSet
from diracbench.provenance import write_provenance

MANIFEST_FIELDS = ("index", "name", "split", "source", "sha256", "crop", "scale")


def plan_split(split: str, settings: dict, threads: int) -> tuple[int, Iterator[tuple[np.ndarray, dict]]]:
    """The number of images of one split and an iterator over its (pixels, manifest row) pairs.

    Everything that can be checked without decoding (folders, protocols, limits) is checked here,
    so a wrong path in the test split fails before hours of decoding the train split.
    """
    source = settings["source"]
    size = int(settings["image_size"])
    name = settings["name"]
    if source["kind"] == "photos":
        # The embedded photos make a few MB of tiles: built in memory, written like any split.
        limit = source.get("limits", {}).get(split)
        stride = int(source["train_stride"]) if split == "train" else size
        pixels, rows = build_photo_split(split, list(source["splits"][split]), size, float(source["scale"]), stride, float(source["min_tile_std"]), limit, int(settings["seed"]))
        return len(rows), zip(pixels, rows)
    if source["kind"] == "folders":
        pairs = list_split_files(source[split], f"datasets.{name}.source.{split}")
        # The source-level alpha policy applies to every split's images.
        return len(pairs), stream_folder_split(split, pairs, size, threads, source.get("alpha", "refuse"))
    raise UserError(f"datasets.{name}.source.kind {source['kind']!r} is unknown; use 'photos' or 'folders'")


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.data", __doc__.splitlines()[0])
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for <split>.npy and <split>_manifest.csv")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    args = parser.parse_args(argv)
    settings = args.settings
    for key in ("name", "image_size", "seed", "source"):
        if key not in settings:
            raise UserError(f"--settings lacks {key!r}")
    if settings["source"]["kind"] == "photos":
        check_split_photos({s: settings["source"]["splits"][s] for s in SPLITS})
    start = time.perf_counter()
    size = int(settings["image_size"])
    plans = {split: plan_split(split, settings, args.threads) for split in args.splits}
    counts = {}
    hashes: dict[str, SplitHashes] = {}
    # Each split streams into a temporary file; all are renamed into place together at the end,
    # so a bad image anywhere leaves nothing behind.
    with OutputSet() as out:
        for split, (count, items) in plans.items():
            npy, csv_path = out.path(args.out_dir / f"{split}.npy"), out.path(args.out_dir / f"{split}_manifest.csv")
            hashes[split] = SplitHashes(near=near_bits_of(settings) is not None)
            counts[split] = write_split(npy, csv_path, (count, 3, size, size), hashes[split].observe(items), MANIFEST_FIELDS)
            print(f"{split}: {count} images of {size}px", flush=True)
        # Leakage between the splits (or into a published prior's training set) refuses the
        # dataset before anything is renamed into place (the report stays, for the user to read).
        check_overlap(hashes, settings, args.out_dir)
    write_provenance(args.out_dir / "data.json", "prepare_data", settings, seeds=settings["seed"], extra={"counts": counts, "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    cli.run(main, stage="diracbench.data")
