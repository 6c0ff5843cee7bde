"""Train/test leakage in folder datasets is refused by prepare_data (issue 15, item 7).

Probes: val/test roots equal to the train root, and a test symlink to a training image, were
accepted. Here the real `python -m diracbench.data` stage runs on generated folders of photo
crops; each leak must stop it with one line, leave no split arrays, and list the pairs in
overlap_report.csv beside the manifests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diracbench.data.overlap import _near_pairs, perceptual_hashes
from diracbench.data.photos import photo_files

REPO = Path(__file__).resolve().parents[2]


def crops(photo: str, n: int, side: int = 64) -> list[Image.Image]:
    img = Image.open(photo_files(photo)[0]).convert("RGB")
    w, h = img.size
    out = []
    for k in range(n):
        left, top = (k * side) % (w - side), ((k * side) // (w - side)) * side % (h - side)
        out.append(img.crop((left, top, left + side, top + side)))
    return out


def lay_out(tmp_path: Path) -> dict[str, Path]:
    roots = {s: tmp_path / s for s in ("train", "val", "test")}
    for split, photo, n in (("train", "astronaut", 8), ("val", "coffee", 3), ("test", "chelsea", 3)):
        roots[split].mkdir()
        for i, im in enumerate(crops(photo, n)):
            im.save(roots[split] / f"{split}{i}.png")
    return roots


def run_prepare(tmp_path: Path, roots: dict[str, Path], source_extra: dict | None = None, **extra) -> subprocess.CompletedProcess:
    settings = {"name": "folderset", "image_size": 32, "seed": 0,
                "source": {"kind": "folders", **(source_extra or {}), **{s: {"protocol": "plain", "root": str(r)} for s, r in roots.items()}}, **extra}
    out = tmp_path / "results" / "folderset" / "data"
    cmd = [sys.executable, "-m", "diracbench.data", "--settings", json.dumps(settings), "--out-dir", str(out), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def report_rows(tmp_path: Path) -> list[dict]:
    with open(tmp_path / "results" / "folderset" / "data" / "overlap_report.csv") as fh:
        return list(csv.DictReader(fh))


def assert_refused(proc, tmp_path: Path, kind: str) -> list[dict]:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]  # (progress bars aside)
    assert len(lines) == 1 and "leaking image pair" in lines[0] and "overlap_report.csv" in lines[0], proc.stderr[-2000:]
    assert not list((tmp_path / "results" / "folderset" / "data").glob("*.npy"))
    rows = report_rows(tmp_path)
    assert rows and any(r["kind"] == kind for r in rows), rows
    return rows


def test_disjoint_folders_pass_with_an_empty_report(tmp_path):
    proc = run_prepare(tmp_path, lay_out(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report_rows(tmp_path) == []
    assert (tmp_path / "results" / "folderset" / "data" / "test.npy").is_file()


def test_val_root_equal_to_the_train_root_is_refused(tmp_path):
    roots = lay_out(tmp_path)
    roots["val"] = roots["train"]
    rows = assert_refused(run_prepare(tmp_path, roots), tmp_path, "exact")
    assert len([r for r in rows if r["split_a"] == "train" and r["split_b"] == "val"]) == 8


def test_a_test_symlink_to_a_training_image_is_refused(tmp_path):
    roots = lay_out(tmp_path)
    (roots["test"] / "test9.png").symlink_to(roots["train"] / "train5.png")
    rows = assert_refused(run_prepare(tmp_path, roots), tmp_path, "exact")
    assert {(r["name_a"], r["name_b"]) for r in rows} == {("train5.png", "test9.png")}


def test_a_reencoded_resized_copy_is_refused_as_near_duplicate(tmp_path):
    roots = lay_out(tmp_path)
    copy = Image.open(roots["train"] / "train2.png").resize((58, 58), Image.BICUBIC)
    copy.save(roots["test"] / "test9.jpg", quality=80)
    rows = assert_refused(run_prepare(tmp_path, roots), tmp_path, "near")
    assert {(r["name_a"], r["name_b"]) for r in rows} == {("train2.png", "test9.jpg")}
    assert 0 < int(rows[0]["distance"]) <= 4


def test_near_duplicate_check_can_be_turned_off(tmp_path):
    roots = lay_out(tmp_path)
    Image.open(roots["train"] / "train2.png").resize((58, 58), Image.BICUBIC).save(roots["test"] / "test9.jpg", quality=80)
    assert run_prepare(tmp_path, roots).returncode == 2
    proc = run_prepare(tmp_path, roots, source_extra={"near_duplicate_bits": None})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report_rows(tmp_path) == []


def test_a_test_image_in_the_priors_training_list_is_refused(tmp_path):
    roots = lay_out(tmp_path)
    listing = tmp_path / "prior_train.txt"
    listing.write_text("# FFHQ-style list\nsomething_else.png\ntest1.png\n")
    rows = assert_refused(run_prepare(tmp_path, roots, prior_training_images=str(listing)), tmp_path, "prior_training")
    assert [r["name_b"] for r in rows] == ["test1.png"]


def test_banded_near_search_equals_brute_force():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    b = rng.integers(0, 2**63, size=120, dtype=np.uint64)
    for j in range(0, 120, 7):  # plant copies with 0-5 flipped bits
        flips = rng.choice(64, size=j % 6, replace=False)
        b[j] = a[j] ^ np.uint64(sum(1 << int(f) for f in flips))
    brute = {(i, j, int(d)) for i in range(len(a)) for j in range(len(b)) if (d := np.bitwise_count(a[i] ^ b[j])) <= 4}
    assert set(_near_pairs(a, b, 4)) == brute and len(brute) >= 10


def test_different_photos_are_far_apart_in_hash():
    imgs = [np.asarray(c).transpose(2, 0, 1) for p in ("astronaut", "coffee", "chelsea") for c in crops(p, 4)]
    h = perceptual_hashes(np.stack(imgs))
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    assert d[~np.eye(len(h), dtype=bool)].min() > 4
