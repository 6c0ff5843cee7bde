"""prepare_data streams: the peak memory of `python -m diracbench.data` does not grow with the dataset,
and the streamed files are the bytes `np.save` would write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diracbench.data import load_split
from diracbench.data.images import centre_crop_resize, read_rgb
from diracbench.data.stream import NpyWriter, ordered_map

SRC = Path(__file__).resolve().parents[2] / "src"
SOURCE_PX, IMAGE_SIZE = 160, 128
FEW, MANY = 300, 1200


def _write_pngs(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:SOURCE_PX, 0:SOURCE_PX]
    for i in range(n):
        img = np.stack([(xx * (i % 7 + 1)) % 256, (yy * (i % 5 + 1)) % 256, (xx + yy + 3 * i) % 256], -1).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.png", compress_level=1)


def _write_noise_pngs(folder: Path, n: int, seed: int) -> None:
    """Held-out images unlike every training pattern (and each other): prepare_data refuses leaks."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SOURCE_PX, SOURCE_PX, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png", compress_level=1)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    _write_pngs(root / "train", MANY)
    _write_noise_pngs(root / "val", 2, seed=1)
    _write_noise_pngs(root / "test", 2, seed=2)
    return root


def _prepare_in_subprocess(root: Path, n_train: int, out: Path) -> float:
    """Run the stage as the rule does and return the peak RSS (MB) of exactly that process."""
    settings = {
        "name": "many",
        "image_size": IMAGE_SIZE,
        "seed": 0,
        "source": {
            "kind": "folders",
            "train": {"protocol": "plain", "root": str(root / "train"), "limit": n_train},
            "val": {"protocol": "plain", "root": str(root / "val")},
            "test": {"protocol": "plain", "root": str(root / "test")},
        },
    }
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "diracbench.data", "--settings", json.dumps(settings), "--out-dir", str(out), "--threads", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over every child
    # the test process ever had, which an earlier, bigger subprocess could dominate).
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 0, stderr
    return usage.ru_maxrss / 1024  # Linux reports KiB


def test_peak_memory_does_not_grow_with_the_number_of_images(many_images, tmp_path):
    few = _prepare_in_subprocess(many_images, FEW, tmp_path / "few")
    many = _prepare_in_subprocess(many_images, MANY, tmp_path / "many")
    extra_pixels_mb = (MANY - FEW) * 3 * IMAGE_SIZE**2 / 2**20  # 44 MB: what an in-memory split adds
    # Holding the split (or the decoded images) in memory would add about extra_pixels_mb; streaming
    # adds nothing but measurement noise (a few MB at most).
    assert many - few < extra_pixels_mb / 4, f"peak RSS {few:.1f} MB for {FEW} images, {many:.1f} MB for {MANY}"
    train = load_split(tmp_path / "many" / "train.npy")
    assert train.shape == (MANY, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert np.array_equal(train[:FEW], load_split(tmp_path / "few" / "train.npy"))  # same order, same pixels
    for i in (0, 517, MANY - 1):  # parallel decode kept the file order
        path = many_images / "train" / f"{i:05d}.png"
        assert np.array_equal(train[i], centre_crop_resize(read_rgb(path), IMAGE_SIZE, path))
    assert not [p for p in (tmp_path / "many").iterdir() if p.name.startswith(".")]  # no temp files left


def test_streamed_npy_is_byte_identical_to_np_save(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(7, 3, 5, 4), dtype=np.uint8)
    np.save(tmp_path / "saved.npy", arr)
    with NpyWriter(tmp_path / "streamed.npy", arr.shape) as writer:
        writer.write(arr[:3])  # a block
        for img in arr[3:]:
            writer.write(img)  # single images
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()


def test_writer_refuses_a_count_other_than_announced(tmp_path):
    with pytest.raises(ValueError, match="announced"):
        with NpyWriter(tmp_path / "short.npy", (3, 3, 2, 2)) as writer:
            writer.write(np.zeros((2, 3, 2, 2), np.uint8))
    writer = NpyWriter(tmp_path / "long.npy", (1, 3, 2, 2))
    with pytest.raises(ValueError, match="more than"):
        writer.write(np.zeros((2, 3, 2, 2), np.uint8))


def test_ordered_map_keeps_order_and_bounds_the_window():
    started, lock = 0, threading.Lock()

    def slow(i: int) -> int:
        nonlocal started
        with lock:
            started += 1
        time.sleep(0.002 * (i % 3))  # finish out of order
        return i * i

    results, ahead = [], []
    for r in ordered_map(slow, range(60), threads=3, window=4):
        time.sleep(0.003)  # a slow consumer: an unbounded map would decode everything ahead of it
        with lock:
            ahead.append(started - len(results))  # decoded or decoding, not yet consumed
        results.append(r)
    assert results == [i * i for i in range(60)]
    assert max(ahead) <= 4, ahead


def test_ordered_map_raises_the_first_failure():
    def fail_at_5(i: int) -> int:
        if i == 5:
            raise RuntimeError("bad item 5")
        return i

    seen = []
    with pytest.raises(RuntimeError, match="bad item 5"):
        for r in ordered_map(fail_at_5, range(100), threads=2):
            seen.append(r)
    assert seen == [0, 1, 2, 3, 4]
