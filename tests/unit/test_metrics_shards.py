"""Sharded, resumable metrics: shards gathered give the unsharded run's CSVs byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diracbench import cli
from diracbench.metrics.__main__ import main as metrics_main

from test_metrics_eval import METRIC_SETTINGS, make_task, write_recon

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def stand_in_inception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small TorchScript file with the interface of clean-fid's Inception file (`.layers`
    mapping 299 px images to 2048 features), pointed at by $DIRACBENCH_INCEPTION: the real
    Inception weights are not available offline, but everything around them (PNG files, clean-fid's
    resize and batching, its Fréchet distance) is the real FID path."""
    import torch

    from diracbench.metrics import backbones, perceptual

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
            self.fc = torch.nn.Linear(8 * 16, 2048)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
            return self.fc(h.flatten(1))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = Layers()

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(Net()), str(path))
    import hashlib

    # Accept this file where the published file's SHA-256 is required (main's backbones checks it).
    monkeypatch.setattr(backbones, "INCEPTION_SHA256", hashlib.sha256(path.read_bytes()).hexdigest(), raising=False)
    monkeypatch.setenv(backbones.INCEPTION_ENV, str(path))
    monkeypatch.setattr(backbones, "_INCEPTION", {})
    monkeypatch.setattr(perceptual, "_INCEPTION_MODELS", {})
    return path


def _settings(method: str, task: str, batch_size: int) -> str:
    return json.dumps({"dataset": "photos", "task": task, "method": method, **METRIC_SETTINGS, "batch_size": batch_size})


def _shards(tdir: Path, recon: Path | None, settings: str, n: int, out: Path) -> list[Path]:
    files = []
    for k in range(n):
        f = out / f"{k}-of-{n}.npz"
        argv = ["--settings", settings, "--task-dir", str(tdir), "--shard", f"{k}/{n}", "--out-shard", str(f)]
        metrics_main(argv + (["--recon", str(recon)] if recon else []))
        files.append(f)
    return files


def _csvs(folder: Path) -> tuple[bytes, bytes]:
    return (folder / "per_image.csv").read_bytes(), (folder / "aggregate.csv").read_bytes()


def test_sharded_and_gathered_metrics_equal_the_unsharded_run(tmp_path: Path) -> None:
    tdir = make_task(tmp_path, task="inpaint", n=9)
    meas = np.load(tdir / "measurements" / "test.npz")
    order = [7, 0, 3, 5, 1, 8, 2]  # a subset, out of order: matched by name
    recon = write_recon(tmp_path / "r.npz", meas["x"][order], meas["names"][order], 0.05)
    # FID off: with real Inception weights its 2048-d matrix square root alone takes ~20 s here;
    # its features are checked below instead.
    settings = json.dumps({**json.loads(_settings("dps", "inpaint", 3)), "fid": False})  # 7 images: batches 0:3, 3:6, 6:7
    plain = tmp_path / "plain"
    metrics_main(["--settings", settings, "--task-dir", str(tdir), "--recon", str(recon), "--out-dir", str(plain)])
    for n in (2, 5):  # 5 shards of 3 batches: two are empty
        files = _shards(tdir, recon, settings, n, tmp_path / f"shards{n}")
        out = tmp_path / f"gathered{n}"
        metrics_main(["--settings", settings, "--shards", *map(str, reversed(files)), "--out-dir", str(out)])
        assert _csvs(out) == _csvs(plain), f"{n} shards"
        assert not list(out.glob(".*partial"))
    # A gather refuses shards scored with other settings (here: other scoring batches).
    other = _shards(tdir, recon, json.dumps({**json.loads(settings), "batch_size": 2}), 2, tmp_path / "other")
    with pytest.raises(SystemExit):
        cli.run(metrics_main, ["--settings", settings, "--shards", *map(str, other), "--out-dir", str(tmp_path / "x")], stage="diracbench.metrics")


def test_fid_features_of_shards_equal_the_whole_sets(tmp_path: Path, stand_in_inception: Path) -> None:
    """FID = clean-fid's Fréchet distance of the two feature sets, so equal features give equal FID."""
    from diracbench.metrics.perceptual import inception_features
    from diracbench.metrics.shards import gather_scores

    tdir = make_task(tmp_path, n=7)
    meas = np.load(tdir / "measurements" / "test.npz")
    recon = write_recon(tmp_path / "r.npz", meas["x"], meas["names"], 0.05)
    settings = _settings("dps", "deblur", 3)
    scores, _ = gather_scores(_shards(tdir, recon, settings, 2, tmp_path / "shards"), json.loads(settings))
    whole = np.load(recon)["x_hat"]
    assert np.array_equal(scores.features["fid:x_hat"], inception_features(whole, batch_size=3))
    assert np.array_equal(scores.features["fid:x"], inception_features(meas["x"], batch_size=3))
    assert scores.features["fid:x"].shape == (7, 2048) and str(stand_in_inception) in scores.notes["fid"]


def test_reference_row_shards_and_a_missing_shard_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tdir = make_task(tmp_path, n=5)
    settings = _settings("y", "deblur", 2)
    plain = tmp_path / "plain"
    metrics_main(["--settings", settings, "--task-dir", str(tdir), "--out-dir", str(plain)])
    files = _shards(tdir, None, settings, 3, tmp_path / "shards")
    metrics_main(["--settings", settings, "--shards", *map(str, files), "--out-dir", str(tmp_path / "g")])
    assert _csvs(tmp_path / "g") == _csvs(plain)
    capsys.readouterr()
    for gone in (files[1], files[2]):
        kept = [f for f in files if f != gone]
        with pytest.raises(SystemExit) as exit_:
            cli.run(metrics_main, ["--settings", settings, "--shards", *map(str, kept), "--out-dir", str(tmp_path / "bad")], stage="diracbench.metrics")
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and "missing" in err, err
    assert not (tmp_path / "bad" / "per_image.csv").exists()


def test_a_killed_metrics_shard_resumes_from_its_finished_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from diracbench.metrics import evaluate

    tdir = make_task(tmp_path, n=6)
    meas = np.load(tdir / "measurements" / "test.npz")
    recon = write_recon(tmp_path / "r.npz", meas["x"], meas["names"], 0.05)
    settings = _settings("ddrm", "deblur", 2)
    argv = ["--settings", settings, "--task-dir", str(tdir), "--recon", str(recon)]
    metrics_main(argv + ["--out-dir", str(tmp_path / "plain")])
    real, calls = evaluate.score_images, []

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "score_images", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        metrics_main(argv + ["--out-dir", str(tmp_path / "resumed")])
    assert not (tmp_path / "resumed" / "per_image.csv").exists()
    assert len(list((tmp_path / "resumed" / ".per_image.csv.partial").glob("batch-*.npz"))) == 1
    monkeypatch.setattr(evaluate, "score_images", real)
    capsys.readouterr()
    metrics_main(argv + ["--out-dir", str(tmp_path / "resumed")])
    provenance = json.loads((tmp_path / "resumed" / "per_image.provenance.json").read_text())
    assert provenance["resumed_batches"] == 1
    assert _csvs(tmp_path / "resumed") == _csvs(tmp_path / "plain")
    assert not (tmp_path / "resumed" / ".per_image.csv.partial").exists()
