"""What a folder dataset is made of, cheaply: each split's image files with their sizes and mtimes.

The Snakefile puts the digest of this listing into the `prepare_data` settings, so replacing,
adding or deleting an image (anything that changes a file's size or modification time, or the
set of files a split selects) changes the job's params and reruns `prepare_data` — and through
its outputs exactly what depends on the data. Unchanged folders leave the digest, hence the DAG,
as they were.

Cost: one directory walk and one `stat` per file at DAG time, no file is read. That is well
under a second for CelebA-HQ/FFHQ-sized folders (tens of thousands of files) and a few seconds
for ImageNet's 1.28M training files on a local disk (more on a cold network filesystem) — paid
by every `snakemake` invocation whose DAG contains `prepare_data` for that dataset. The content
itself is hashed (SHA-256 per file, in the manifests) only when `prepare_data` runs.
"""

from __future__ import annotations

import hashlib
import json
import os

from diracbench.data import SPLITS


def split_listing(spec: dict, key: str) -> list[tuple[str, int, int]]:
    """(name, size in bytes, mtime in ns) of the files one split selects, in the split's order."""
    from diracbench.data.folders import list_split_files

    out = []
    for name, path in list_split_files(spec, key):
        st = os.stat(path)  # follows symlinks: a re-pointed link changes the digest too
        out.append((name, int(st.st_size), int(st.st_mtime_ns)))
    return out


def source_digest(name: str, source: dict) -> dict:
    """{"sha256": digest of every split's listing, "counts": {split: number of images or None}}.

    A split that cannot be listed yet (folder not downloaded, too few images for its `limit`)
    counts as None and enters the digest as its error: a dry run still plans the DAG, and
    prepare_data reports the problem when it runs.
    """
    from diracbench.errors import UserError

    h = hashlib.sha256()
    counts: dict[str, int | None] = {}
    for split in SPLITS:
        try:
            listing: object = split_listing(source[split], f"datasets.{name}.source.{split}")
            counts[split] = len(listing)  # type: ignore[arg-type]
        except UserError as err:
            listing, counts[split] = f"unavailable: {err}", None
        h.update(json.dumps([split, listing], separators=(",", ":")).encode())
    return {"sha256": h.hexdigest(), "counts": counts}
