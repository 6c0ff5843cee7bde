"""Figures: every figure is written (PNG + PDF, non-empty) from its inputs; bad inputs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from diracbench.errors import UserError
from diracbench.figures import main as figures_main
from diracbench.figures import parse_inputs, step_means

from test_metrics_eval import make_task, run_metrics, write_recon

SETTINGS = {"dataset": "photos", "task": "deblur", "seed": 0, "grid_images": 2, "uncertainty_images": 2}
COLUMNS = ["image", "name", "step", "t", "nfe", "dc", "psnr", "lpips"]


def trajectory(path: Path, steps: int, images: int = 3, lpips_every: int = 2) -> Path:
    rows = []
    for i in range(images):
        for s in range(steps):
            t = 1 - (s + 1) / steps
            rows.append({"image": i, "name": f"img{i:03d}", "step": s, "t": t, "nfe": s + 1, "dc": 0.0025 * (1 + 4 * t) + 1e-4 * i,
                         "psnr": 20 + 6 * (1 - t) + i, "lpips": (0.5 - 0.3 * (1 - t)) if s % lpips_every == 0 else np.nan})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def draw(figure: str, out: Path, inputs: dict[str, Path], settings: dict = SETTINGS) -> list[Path]:
    argv = [figure, "--settings", json.dumps(settings), "--out-stem", str(out)]
    for key, path in inputs.items():
        argv += ["--input", f"{key}={path}"]
    figures_main(argv)
    files = [out.with_name(out.name + ".png"), out.with_name(out.name + ".pdf")]
    for f in files:
        assert f.is_file() and f.stat().st_size > 1000, f
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files[1].read_bytes()[:5] == b"%PDF-"
    assert out.with_name(out.name + ".provenance.json").is_file()
    return files


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fig")
    tdir = make_task(root, n=4)
    x = np.load(tdir / "measurements" / "test.npz")["x"]
    names = [f"img{i:03d}" for i in range(4)]
    out = {"root": root, "tdir": tdir}
    for k, method in enumerate(("dirac-po", "dps")):
        recon = write_recon(tdir / method / "recon" / "test.npz", x[: 4 - k], names[: 4 - k], 0.02 + 0.02 * k, seed=k, nfe=10 * (k + 1))
        metrics = run_metrics(tdir, method, recon)
        out[method] = {"recon": recon, "per_image": metrics / "per_image.csv", "aggregate": metrics / "aggregate.csv"}
    return out


def test_perception_figure(task, tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(yaml.safe_dump({"po": {"t_stop": 0.0}, "do": {"t_stop": 0.6}}))
    draw("perception", tmp_path / "fig3", {"trajectory__dirac": trajectory(tmp_path / "t.csv", 10), "chosen__dirac": chosen})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"po": {"t_stop": 0.0}}))
    with pytest.raises(UserError, match="lacks do"):
        draw("perception", tmp_path / "fig3b", {"trajectory__dirac": trajectory(tmp_path / "t.csv", 10), "chosen__dirac": bad})


def test_consistency_and_lpips_nfe_figures(task, tmp_path: Path) -> None:
    op = task["tdir"] / "operator.json"
    draw("consistency", tmp_path / "fig4l", {"trajectory__dirac": trajectory(tmp_path / "d.csv", 10), "trajectory__dps": trajectory(tmp_path / "p.csv", 40),
                                             "trajectory__ddrm": trajectory(tmp_path / "r.csv", 8), "operator": op})
    draw("lpips-nfe", tmp_path / "fig4r", {"trajectory__dps": trajectory(tmp_path / "p.csv", 40), "aggregate__dirac_po": task["dirac-po"]["aggregate"],
                                          "aggregate__dps": task["dps"]["aggregate"]})


def test_schedules_figure(task, tmp_path: Path) -> None:
    t = np.linspace(0, 1, 11)
    sched = tmp_path / "schedule.csv"
    pd.DataFrame({"t": t, "value": 0.3 + 1.2 * t**2}).to_csv(sched, index=False)
    draw("schedules", tmp_path / "fig7", {"schedule__deblur": sched, "operator__deblur": task["tdir"] / "operator.json"}, {**SETTINGS, "task": None})


def test_samples_grid_uses_images_common_to_all_methods(task, tmp_path: Path) -> None:
    draw("samples", tmp_path / "grid", {
        "measurements": task["tdir"] / "measurements" / "test.npz",
        "recon__dirac_po": task["dirac-po"]["recon"], "per_image__dirac_po": task["dirac-po"]["per_image"],
        "recon__dps": task["dps"]["recon"], "per_image__dps": task["dps"]["per_image"],
    })


def test_uncertainty_map(task, tmp_path: Path) -> None:
    meas = np.load(task["tdir"] / "measurements" / "test.npz")
    rng = np.random.default_rng(0)
    samples = np.clip(meas["x"][:2, None] + 0.05 * rng.standard_normal((2, 3) + meas["x"].shape[1:]), 0, 1).astype(np.float32)
    path = tmp_path / "posterior_samples.npz"
    np.savez(path, samples=samples, names=meas["names"][:2])
    draw("uncertainty", tmp_path / "unc", {"measurements": task["tdir"] / "measurements" / "test.npz", "samples": path})
    np.savez(path, samples=samples[:, :1], names=meas["names"][:2])
    with pytest.raises(UserError, match="at least 2 samples"):
        draw("uncertainty", tmp_path / "unc2", {"measurements": task["tdir"] / "measurements" / "test.npz", "samples": path})


def test_empty_trajectories_still_give_a_figure(task, tmp_path: Path) -> None:
    """Methods without a trajectory write a header-only CSV; the figure says so instead of failing."""
    empty = tmp_path / "empty.csv"
    pd.DataFrame(columns=COLUMNS).to_csv(empty, index=False)
    draw("consistency", tmp_path / "e", {"trajectory__dps": empty, "operator": task["tdir"] / "operator.json"})


def test_bad_inputs_give_clear_errors(task, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("step,t\n0,1\n")
    with pytest.raises(UserError, match="lacks the columns"):
        draw("consistency", tmp_path / "x", {"trajectory__dps": bad, "operator": task["tdir"] / "operator.json"})
    with pytest.raises(UserError, match="does not exist"):
        draw("perception", tmp_path / "y", {"trajectory__dirac": tmp_path / "missing.csv"})
    with pytest.raises(UserError, match="KIND"):
        parse_inputs(["no-equals-sign"])
    assert not (tmp_path / "x.png").exists()


def test_step_means_average_over_images() -> None:
    df = pd.DataFrame({"image": [0, 1, 0, 1], "name": list("abab"), "step": [0, 0, 1, 1], "t": [1.0, 1.0, 0.5, 0.5], "nfe": [1, 1, 2, 2],
                       "dc": [1.0, 3.0, 2.0, 4.0], "psnr": [10, 20, 30, 40], "lpips": [np.nan, 0.4, 0.2, 0.4]})
    m = step_means(df)
    assert list(m["dc"]) == [2.0, 3.0] and list(m["psnr"]) == [15.0, 35.0]
    assert m["lpips"].tolist() == pytest.approx([0.4, 0.3])


def test_schedule_label_names_what_made_the_schedule():
    from diracbench.figures import schedule_label

    assert schedule_label({"kind": "greedy", "metric": "lpips"}) == "learned (greedy LPIPS)"
    assert schedule_label({"kind": "greedy", "metric": "mse"}) == "learned (greedy MSE)"
    assert schedule_label({"kind": "from_file", "file": "workflow/resources/blur_schedule_official.txt"}) == "table (blur_schedule_official.txt)"
    assert schedule_label({"kind": "linear"}) == "linear"
