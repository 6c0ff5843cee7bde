"""Train/val/test leakage: exact and near-duplicate images across splits, and a prior's training list.

Checked by `prepare_data` on the prepared (decoded, cropped, resized) images, before anything is
written:
- exact: the SHA-256 of an image's prepared pixels (the same picture under another file name,
  a symlink, a root given twice, a lossless re-encoding);
- near: a 64-bit perceptual hash (DCT of the 32x32 grey image, 8x8 lowest frequencies against
  their median) within `near_duplicate_bits` bits (default 4; null turns it off) — a re-encoded
  JPEG, a slightly resized or recoloured copy. Folder datasets only: the embedded photos are
  split by source photo, and smooth tiles of different photos may share a coarse hash;
- prior: a val/test image named (relative path) or hashed (SHA-256 of the file) in the list of
  a published prior's training images (`prior.pretrained.<ds>.training_images`).

Every pair is written to `overlap_report.csv` beside the manifests (only a header when clean);
any pair refuses the dataset with one line that points at the report.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from diracbench.errors import UserError

DEFAULT_NEAR_BITS = 4
REPORT_NAME = "overlap_report.csv"
REPORT_FIELDS = ("kind", "split_a", "index_a", "name_a", "split_b", "index_b", "name_b", "distance")
_HASH_SIDE = 32
_CHUNK = 512


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(_HASH_SIDE)


def _grey32(images: np.ndarray) -> np.ndarray:
    """uint8 (B, 3, H, W) -> float64 (B, 32, 32) luma, area-averaged (or repeated) to 32 x 32."""
    grey = images.astype(np.float64).transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114])
    b, h, w = grey.shape
    if h % _HASH_SIDE == 0 and w % _HASH_SIDE == 0:
        return grey.reshape(b, _HASH_SIDE, h // _HASH_SIDE, _HASH_SIDE, w // _HASH_SIDE).mean(axis=(2, 4))
    if _HASH_SIDE % h == 0 and _HASH_SIDE % w == 0:
        return grey.repeat(_HASH_SIDE // h, axis=1).repeat(_HASH_SIDE // w, axis=2)
    return np.stack([np.asarray(Image.fromarray(g.astype(np.float32), mode="F").resize((_HASH_SIDE, _HASH_SIDE), Image.BOX)) for g in grey]).astype(np.float64)


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 pHash of each uint8 (N, 3, H, W) image."""
    out = np.empty(len(images), dtype=np.uint64)
    weights = (np.uint64(1) << np.arange(64, dtype=np.uint64))
    for start in range(0, len(images), _CHUNK):
        g = _grey32(np.asarray(images[start : start + _CHUNK]))
        low = _DCT[:8]  # only the 8 x 8 lowest frequencies are needed
        coeffs = (low @ g @ low.T).reshape(len(g), 64)
        median = np.median(coeffs[:, 1:], axis=1, keepdims=True)
        bits = (coeffs > median).astype(np.uint64)
        out[start : start + len(g)] = (bits * weights).sum(axis=1, dtype=np.uint64)
    return out


def pixel_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() for img in images]


def _near_pairs(a: np.ndarray, b: np.ndarray, bits: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) with popcount(a[i] ^ b[j]) <= bits, found through bits + 1 exact bands."""
    if len(a) == 0 or len(b) == 0:
        return []
    bands = bits + 1  # pigeonhole: two hashes within `bits` agree exactly on one of bits + 1 bands
    edges = np.linspace(0, 64, bands + 1).astype(int)
    found: dict[tuple[int, int], int] = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << (hi - lo)) - 1)
        key_a = (a >> np.uint64(lo)) & mask
        key_b = (b >> np.uint64(lo)) & mask
        order = np.argsort(key_a, kind="stable")
        sorted_keys = key_a[order]
        left = np.searchsorted(sorted_keys, key_b, side="left")
        right = np.searchsorted(sorted_keys, key_b, side="right")
        for j in np.nonzero(right > left)[0]:
            cand = order[left[j] : right[j]]
            dist = np.bitwise_count(a[cand] ^ b[j])
            for i, d in zip(cand[dist <= bits], dist[dist <= bits]):
                found[(int(i), int(j))] = int(d)
    return sorted((i, j, d) for (i, j), d in found.items())


def read_training_list(path: str | Path) -> set[str]:
    """Names (relative paths as in the manifests) or SHA-256 digests, one per line; '#' comments."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"the prior's training-image list {path} does not exist (prior.pretrained.<dataset>.training_images); fix the path or remove the key")
    entries = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.add(line.lower() if len(line) == 64 and all(c in "0123456789abcdefABCDEF" for c in line) else line)
    return entries


class SplitHashes:
    """What the leakage check keeps of a split: per image its pixel SHA-256, perceptual hash,
    name and source-file SHA-256 — a few hundred bytes an image, so `prepare_data` can stream
    the pixels to disk and still compare every split with every other."""

    def __init__(self, near: bool) -> None:
        self.exact: list[str] = []
        self.near: list[int] | None = [] if near else None
        self.rows: list[dict] = []

    def add(self, pixels: np.ndarray, row: dict) -> None:
        self.exact.append(pixel_hashes(pixels[None])[0])
        if self.near is not None:
            self.near.append(int(perceptual_hashes(pixels[None])[0]))
        self.rows.append({"name": row["name"], "sha256": row.get("sha256", "")})

    def observe(self, items: Iterable[tuple[np.ndarray, dict]]) -> Iterator[tuple[np.ndarray, dict]]:
        """Pass (pixels, row) pairs through unchanged, hashing each on the way."""
        for pixels, row in items:
            self.add(pixels, row)
            yield pixels, row

    @classmethod
    def of(cls, pixels: np.ndarray, rows: list[dict], near: bool = True) -> "SplitHashes":
        out = cls(near)
        for img, row in zip(pixels, rows):
            out.add(img, row)
        return out


def find_overlaps(splits: dict[str, SplitHashes], near_bits: int | None, prior_list: set[str] | None = None) -> list[dict]:
    """Every leaking pair between train/val/test (and val/test against the prior's list)."""
    names = {s: [r["name"] for r in h.rows] for s, h in splits.items()}
    exact = {s: h.exact for s, h in splits.items()}
    near = {s: np.asarray(h.near, dtype=np.uint64) for s, h in splits.items()} if near_bits is not None else {}
    pairs = [(a, b) for a, b in (("train", "val"), ("train", "test"), ("val", "test")) if a in splits and b in splits]
    report: list[dict] = []
    for a, b in pairs:
        index_a: dict[str, int] = {}
        for i, h in enumerate(exact[a]):
            index_a.setdefault(h, i)
        exact_pairs = set()
        for j, h in enumerate(exact[b]):
            if h in index_a:
                i = index_a[h]
                exact_pairs.add((i, j))
                report.append({"kind": "exact", "split_a": a, "index_a": i, "name_a": names[a][i], "split_b": b, "index_b": j, "name_b": names[b][j], "distance": 0})
        if near_bits is not None:
            for i, j, d in _near_pairs(near[a], near[b], near_bits):
                if (i, j) not in exact_pairs and exact[a][i] != exact[b][j]:
                    report.append({"kind": "near", "split_a": a, "index_a": i, "name_a": names[a][i], "split_b": b, "index_b": j, "name_b": names[b][j], "distance": d})
    if prior_list:
        for split in ("val", "test"):
            if split not in splits:
                continue
            for j, row in enumerate(splits[split].rows):
                hit = row["name"] if row["name"] in prior_list else (row.get("sha256") if row.get("sha256", "").lower() in prior_list else None)
                if hit is not None:
                    report.append({"kind": "prior_training", "split_a": "prior", "index_a": "", "name_a": hit, "split_b": split, "index_b": j, "name_b": row["name"], "distance": 0})
    return report


def near_bits_of(settings: dict) -> int | None:
    """The near-duplicate threshold in force (folder datasets only; None: exact check alone)."""
    source = settings["source"]
    return source.get("near_duplicate_bits", DEFAULT_NEAR_BITS) if source["kind"] == "folders" else None


def report_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def check_overlap(splits: dict[str, SplitHashes], settings: dict, out_dir: Path) -> Path:
    """Write out_dir/overlap_report.csv; refuse the dataset (one line) when any pair leaks."""
    from diracbench.io import atomic_path

    near_bits = near_bits_of(settings)
    prior = settings.get("prior_training_images")
    rows = find_overlaps(splits, near_bits, read_training_list(prior) if prior else None)
    report = Path(out_dir) / REPORT_NAME
    with atomic_path(report) as tmp:
        tmp.write_text(report_text(rows))
    if rows:
        first = rows[0]
        kinds = sorted({r["kind"] for r in rows})
        raise UserError(
            f"datasets.{settings['name']}: {len(rows)} leaking image pair(s) ({', '.join(kinds)}), e.g. {first['split_b']} "
            f"{first['name_b']!r} ~ {first['split_a']} {first['name_a']!r}; see {report}; make the splits disjoint "
            "(distinct roots, no links or copies across them)"
        )
    return report
