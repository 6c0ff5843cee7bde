"""`python -m diracbench.data`: build the train/val/test arrays and manifests of one dataset.

Example (what the `prepare_data` rule runs):
    python -m diracbench.data --settings '{"name": "photos", "image_size": 32, "seed": 0, "source": {...}}' \
        --out-dir results/photos/data
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from diracbench import cli
from diracbench.data import SPLITS
from diracbench.data.folders import build_folder_split
from diracbench.data.overlap import check_overlap
from diracbench.data.photos import build_photo_split, check_split_photos
from diracbench.errors import UserError
from diracbench.io import OutputSet
from diracbench.provenance import write_provenance

MANIFEST_FIELDS = ("index", "name", "split", "source", "sha256", "crop", "scale")


def build_split(split: str, settings: dict, threads: int) -> tuple[np.ndarray, list[dict]]:
    source = settings["source"]
    size = int(settings["image_size"])
    name = settings["name"]
    if source["kind"] == "photos":
        limit = source.get("limits", {}).get(split)
        stride = int(source["train_stride"]) if split == "train" else size
        return build_photo_split(split, list(source["splits"][split]), size, float(source["scale"]), stride, float(source["min_tile_std"]), limit, int(settings["seed"]))
    if source["kind"] == "folders":
        # The source-level alpha policy applies to every split's images.
        return build_folder_split(split, {"alpha": source.get("alpha", "refuse"), **source[split]}, f"datasets.{name}.source.{split}", size, threads)
    raise UserError(f"datasets.{name}.source.kind {source['kind']!r} is unknown; use 'photos' or 'folders'")


def manifest_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


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
    built = {}
    # Build every split before writing any, so a bad image anywhere leaves nothing behind.
    for split in args.splits:
        built[split] = build_split(split, settings, args.threads)
        print(f"{split}: {len(built[split][0])} images of {settings['image_size']}px", flush=True)
    # Leakage between the splits (or into a published prior's training set) refuses the dataset.
    check_overlap(built, settings, args.out_dir)
    with OutputSet() as out:
        for split, (pixels, rows) in built.items():
            with open(out.path(args.out_dir / f"{split}.npy"), "wb") as fh:
                np.save(fh, pixels)
            out.write_text(args.out_dir / f"{split}_manifest.csv", manifest_text(rows))
    write_provenance(args.out_dir / "data.json", "prepare_data", settings, seeds=settings["seed"], extra={"counts": {s: len(b[0]) for s, b in built.items()}, "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    cli.run(main, stage="diracbench.data")
