"""Every supported image mode decodes to the right 8-bit RGB values; the rest are refused (issue 15, item 4).

Probes: a 16-bit PNG came out saturated (mean 248 instead of ~127), a float32 TIFF all zeros,
and RGBA lost its alpha silently, because every file went through `convert("RGB")`.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diracbench.data.folders import list_split_files, stream_folder_split
from diracbench.data.images import read_rgb
from diracbench.errors import UserError

RNG = np.random.default_rng(0)


def _rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = RNG.integers(0, 65536, size=(32, 40), dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out = _rgb(read_rgb(path))
    expected = np.round(values / 65535.0 * 255.0).astype(np.uint8)
    assert out.shape == (32, 40, 3)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 2], expected)
    assert abs(out.mean() - 127.5) < 3  # the probe: 248 when clipped at 255


def test_float32_tiff_in_unit_range_is_scaled(tmp_path):
    values = RNG.random((24, 24)).astype(np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    out = _rgb(read_rgb(path))
    np.testing.assert_array_equal(out[..., 1], np.round(values.astype(np.float64) * 255.0).astype(np.uint8))
    assert out.mean() > 100  # the probe: all zeros


@pytest.mark.parametrize("values", [np.full((8, 8), 200.0, np.float32), np.full((8, 8), -0.5, np.float32), np.full((8, 8), np.nan, np.float32)])
def test_float_tiff_out_of_range_is_refused_naming_the_file(tmp_path, values):
    path = tmp_path / "bad float.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(UserError) as err:
        read_rgb(path)
    assert str(path) in str(err.value) and "[0, 1]" in str(err.value) and "\n" not in str(err.value)


def _rgba(opaque: bool) -> np.ndarray:
    arr = RNG.integers(0, 256, size=(16, 16, 4), dtype=np.uint8)
    arr[..., 3] = 255 if opaque else RNG.integers(0, 256, size=(16, 16), dtype=np.uint8)
    return arr


def test_rgba_with_transparency_is_refused_by_default(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_rgba(False), mode="RGBA").save(path)
    with pytest.raises(UserError) as err:
        read_rgb(path)
    assert str(path) in str(err.value) and "source.alpha" in str(err.value)


@pytest.mark.parametrize("policy, background", [("white", 255.0), ("black", 0.0)])
def test_rgba_is_composited_when_the_config_asks(tmp_path, policy, background):
    arr = _rgba(False)
    path = tmp_path / "a.png"
    Image.fromarray(arr, mode="RGBA").save(path)
    w = arr[..., 3:].astype(np.float64) / 255.0
    expected = np.round(arr[..., :3] * w + background * (1 - w)).astype(np.uint8)
    np.testing.assert_array_equal(_rgb(read_rgb(path, policy)), expected)


def test_fully_opaque_alpha_is_dropped(tmp_path):
    arr = _rgba(True)
    path = tmp_path / "opaque.png"
    Image.fromarray(arr, mode="RGBA").save(path)
    np.testing.assert_array_equal(_rgb(read_rgb(path)), arr[..., :3])


def test_palette_and_grey_images_decode_to_their_colours(tmp_path):
    rgb = RNG.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_rgb(read_rgb(tmp_path / "p.png")), np.asarray(pal.convert("RGB")))
    grey = RNG.integers(0, 256, size=(20, 20), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    np.testing.assert_array_equal(_rgb(read_rgb(tmp_path / "l.png")), np.repeat(grey[..., None], 3, axis=2))


def test_palette_with_a_transparent_entry_follows_the_alpha_policy(tmp_path):
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.info["transparency"] = 1
    pal.save(tmp_path / "pt.png", transparency=1)
    with pytest.raises(UserError, match="transparent"):
        read_rgb(tmp_path / "pt.png")
    out = _rgb(read_rgb(tmp_path / "pt.png", "black"))
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[1, 1]) == (10, 20, 30)


def test_an_unsupported_mode_is_refused_in_one_line(tmp_path):
    path = tmp_path / "lab.tif"
    Image.new("LAB", (16, 16)).save(path)
    with pytest.raises(UserError) as err:
        read_rgb(path)
    assert "unsupported mode LAB" in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_folder_split_decodes_a_16_bit_png_through_prepare_data_code(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    values = np.full((16, 16), 32768, dtype=np.uint16)
    Image.fromarray(values).save(root / "a.png")
    pairs = list_split_files({"protocol": "plain", "root": str(root)}, "datasets.x.source.test")
    pixels = np.stack([p for p, _ in stream_folder_split("test", pairs, 16, 1)])
    assert pixels.shape == (1, 3, 16, 16) and int(pixels.min()) == int(pixels.max()) == 128
