"""The prepare_data rule's requests: image counts per protocol, and a walltime that grows with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from diracbench import data_resources as dr


def touch_images(folder: Path, n: int, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:05d}{suffix}").write_bytes(b"")  # counted by name, never decoded
    (folder / "README.txt").write_text("not an image")


def folders_dataset(root: Path) -> dict:
    return {
        "image_size": 16,
        "source": {
            "kind": "folders",
            "train": {"protocol": "celeba_hq", "root": str(root / "celeba"), "part": "train", "seed": 0},
            "val": {"protocol": "ffhq", "root": str(root / "ffhq"), "subfolders": ["00001"], "limit": 3},
            "test": {"protocol": "imagenet", "root": str(root / "imagenet"), "part": "last"},
        },
    }


def test_counts_follow_each_protocol(tmp_path):
    touch_images(tmp_path / "celeba", 30)
    touch_images(tmp_path / "ffhq" / "00000", 7)
    touch_images(tmp_path / "ffhq" / "00001", 5, suffix=".jpg")
    for cls in ("n01", "n02", "n03", "n04"):
        touch_images(tmp_path / "imagenet" / cls, 6)
    spec = folders_dataset(tmp_path)["source"]
    assert dr.split_image_count(spec["train"]) == 24  # 80 % of 30
    assert dr.split_image_count({**spec["train"], "part": "val"}) == 3
    assert dr.split_image_count({**spec["train"], "part": "test"}) == 3
    assert dr.split_image_count(spec["val"]) == 3  # limit
    assert dr.split_image_count({**spec["val"], "limit": None, "subfolders": ["00000", "00001"]}) == 12
    assert dr.split_image_count(spec["test"]) == 4  # one per class
    assert dr.split_image_count({**spec["test"], "part": "all"}) == 24
    assert dr.split_image_count({"protocol": "plain", "root": str(tmp_path / "ffhq" / "00000")}) == 7
    assert dr.split_image_count({"protocol": "plain", "root": str(tmp_path / "nowhere")}) == 0
    assert dr.dataset_image_count(folders_dataset(tmp_path)) == 24 + 3 + 4


def test_runtime_grows_with_images_and_shrinks_with_threads(tmp_path, monkeypatch):
    touch_images(tmp_path / "celeba", 30)
    touch_images(tmp_path / "ffhq" / "00001", 5)
    for cls in ("n01", "n02"):
        touch_images(tmp_path / "imagenet" / cls, 2)
    dataset = folders_dataset(tmp_path)  # 24 + 3 + 2 = 29 images
    assert dr.prepare_runtime_min(dataset, 8) == dr.MIN_RUNTIME_MIN  # small data: the floor
    monkeypatch.setattr(dr, "SECONDS_PER_IMAGE", 600.0)  # as if each image took 10 minutes
    assert dr.prepare_runtime_min(dataset, 1) == dr.OVERHEAD_MIN + 29 * 10
    assert dr.prepare_runtime_min(dataset, 2) == dr.OVERHEAD_MIN + 145
    touch_images(tmp_path / "celeba", 60)  # twice the images
    assert dr.prepare_runtime_min(dataset, 1) == dr.OVERHEAD_MIN + (48 + 3 + 2) * 10


@pytest.mark.parametrize("kind, threads", [("photos", dr.PHOTO_THREADS), ("folders", dr.FOLDER_THREADS)])
def test_threads_per_source_kind(kind, threads):
    assert dr.prepare_threads({"source": {"kind": kind}}) == threads
    assert dr.PHOTO_THREADS == 2  # the embedded default keeps its command line
