"""Datasets: photo splits by source photo, folder protocols, and bad-data errors that leave nothing behind."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diracbench.data import load_split
from diracbench.data.__main__ import main as data_main
from diracbench.errors import UserError

PHOTOS = {
    "name": "photos",
    "image_size": 16,
    "seed": 0,
    "source": {
        "kind": "photos",
        "scale": 0.25,
        "train_stride": 16,
        "min_tile_std": 0.04,
        "splits": {"train": ["chelsea", "rocket"], "val": ["coffee"], "test": ["astronaut", "china"]},
        "limits": {"train": 40, "val": 6, "test": 8},
    },
}


def run_data(settings: dict, out: Path) -> None:
    data_main(["--settings", json.dumps(settings), "--out-dir", str(out)])


def manifest(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_photo_splits_are_disjoint_by_photo_and_deterministic(tmp_path):
    run_data(PHOTOS, tmp_path / "a")
    run_data(PHOTOS, tmp_path / "b")
    photos_per_split = {}
    for split, n in (("train", 40), ("val", 6), ("test", 8)):
        arr = load_split(tmp_path / "a" / f"{split}.npy")
        assert arr.shape == (n, 3, 16, 16) and arr.dtype == np.uint8
        assert np.array_equal(arr, load_split(tmp_path / "b" / f"{split}.npy"))
        rows = manifest(tmp_path / "a" / f"{split}_manifest.csv")
        assert len(rows) == n and all(r["split"] == split and len(r["sha256"]) == 64 for r in rows)
        photos_per_split[split] = {r["name"].split("/")[0] for r in rows}
    assert photos_per_split["train"] <= {"chelsea", "rocket"}
    assert photos_per_split["test"] <= {"astronaut", "china"}
    assert not (photos_per_split["train"] & photos_per_split["val"]) and not (photos_per_split["val"] & photos_per_split["test"])


def test_photo_in_two_splits_is_rejected(tmp_path):
    bad = json.loads(json.dumps(PHOTOS))
    bad["source"]["splits"]["val"] = ["coffee", "rocket"]
    with pytest.raises(UserError, match="rocket"):
        run_data(bad, tmp_path)
    assert not any(tmp_path.iterdir())


def write_images(folder: Path, n: int, size=(40, 30), start=0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        p = folder / f"{i:05d}.png"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def folder_settings(root: Path) -> dict:
    return {
        "name": "faces",
        "image_size": 16,
        "seed": 0,
        "source": {
            "kind": "folders",
            "train": {"protocol": "celeba_hq", "root": str(root / "celeba"), "part": "train", "seed": 0},
            "val": {"protocol": "ffhq", "root": str(root / "ffhq"), "subfolders": ["00001"], "limit": 3},
            "test": {"protocol": "ffhq", "root": str(root / "ffhq"), "subfolders": ["00000"], "limit": 4},
        },
    }


@pytest.fixture
def fake_folders(tmp_path):
    write_images(tmp_path / "celeba", 20, start=2000)  # other pixels than the ffhq test images (no leakage)
    write_images(tmp_path / "ffhq" / "00000", 5)
    write_images(tmp_path / "ffhq" / "00001", 5, start=1000)
    return tmp_path


def test_folder_protocols(fake_folders, tmp_path):
    out = tmp_path / "out"
    run_data(folder_settings(fake_folders), out)
    assert load_split(out / "train.npy").shape == (16, 3, 16, 16)  # 80 % of 20
    test_rows = manifest(out / "test_manifest.csv")
    assert [r["name"] for r in test_rows] == [f"00000/{i:05d}.png" for i in range(4)]  # first N, sorted
    assert len(manifest(out / "val_manifest.csv")) == 3


def test_imagenet_protocol_takes_first_and_last_image_per_class(tmp_path):
    for c in ("n01", "n02", "n03"):
        write_images(tmp_path / "val" / c, 3, start=hash(c) % 100)
        write_images(tmp_path / "train" / c, 3, start=1000 + hash(c) % 100)  # its own images: no leakage
    settings = {
        "name": "imagenet",
        "image_size": 16,
        "seed": 0,
        "source": {
            "kind": "folders",
            "train": {"protocol": "imagenet", "root": str(tmp_path / "train"), "part": "all"},
            "val": {"protocol": "imagenet", "root": str(tmp_path / "val"), "part": "first"},
            "test": {"protocol": "imagenet", "root": str(tmp_path / "val"), "part": "last"},
        },
    }
    run_data(settings, tmp_path / "out")
    val = {r["name"] for r in manifest(tmp_path / "out" / "val_manifest.csv")}
    test = {r["name"] for r in manifest(tmp_path / "out" / "test_manifest.csv")}
    assert len(val) == len(test) == 3 and not (val & test)
    assert all(Path(n).name == sorted(p.name for p in (tmp_path / "val" / Path(n).parent.name).iterdir())[-1] for n in test)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_folder", "does not exist"),
        ("corrupt_image", "cannot read image"),
        ("truncated_image", "cannot read image"),
        ("too_small", "smaller than the configured image_size"),
        ("empty_folder", "contains no images"),
        ("too_few_images", "provides only"),
    ],
)
def test_bad_data_gives_one_clear_error_and_no_output(fake_folders, tmp_path, damage, message, capsys):
    settings = folder_settings(fake_folders)
    ffhq = fake_folders / "ffhq" / "00000"
    if damage == "missing_folder":
        settings["source"]["test"]["root"] = str(fake_folders / "nowhere")
    elif damage == "corrupt_image":
        (ffhq / "00002.png").write_bytes(b"this is not a png")
    elif damage == "truncated_image":
        data = (ffhq / "00001.png").read_bytes()
        (ffhq / "00001.png").write_bytes(data[: len(data) // 2])
    elif damage == "too_small":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ffhq / "00003.png")
    elif damage == "empty_folder":
        for p in ffhq.iterdir():
            p.unlink()
    elif damage == "too_few_images":
        settings["source"]["test"]["limit"] = 50
    out = tmp_path / "out"
    from diracbench import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.run(data_main, ["--settings", json.dumps(settings), "--out-dir", str(out)], stage="diracbench.data")
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("diracbench.data: error:") and message in errors[0], errors
    assert not out.exists() or not any(out.iterdir())
