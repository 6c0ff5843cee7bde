"""Tables 2-3 (tables_hparams): from chosen.yaml files, configs and weights."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from diracbench import tables_hparams as th
from diracbench.errors import UserError
from diracbench.nn.models import build_model, save_weights

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "workflow" / "presets").glob("*.yaml"))


def _config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _write_tuning(folder: Path, chosen: dict) -> Path:
    """A chosen.yaml with the grid.csv its contract is checked against (one chosen row per variant)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for v, entry in chosen.items():
        for t in (1.0, 0.5, 0.0):
            rows.append({"variant": v, **{f"param_{k}": entry[k] for k in ("guidance", "zeta") if k in entry}, "step": 0, "t": t, "chosen": t == entry["t_stop"]})
    pd.DataFrame(rows).to_csv(folder / "grid.csv", index=False)
    (folder / "chosen.yaml").write_text(yaml.safe_dump(chosen, sort_keys=True))
    return folder / "chosen.yaml"


@pytest.fixture()
def default_run(tmp_path, monkeypatch):
    """The embedded default's config in a folder holding chosen.yaml files but no weights."""
    config = _config(REPO / "config.yaml")
    monkeypatch.chdir(tmp_path)
    sel = {"by": "lpips", "value": 0.4, "split": "val", "n_images": 32, "quantity": "x0_hat"}
    _write_tuning(tmp_path / "results/photos/deblur/dirac/tuning", {"po": {"t_stop": 0.5, "nfe": 26, "selected_by": sel}, "do": {"t_stop": 1.0, "nfe": 1, "selected_by": {**sel, "by": "psnr"}}})
    _write_tuning(tmp_path / "results/photos/inpaint/dirac/tuning", {"po": {"t_stop": 0.0, "nfe": 50, "selected_by": sel}, "do": {"t_stop": 1.0, "nfe": 1, "selected_by": {**sel, "by": "psnr"}}})
    return config, tmp_path


def _inputs(config, ds="photos"):
    return {k: Path(p) for k, p in th.expected_inputs(config, ds).items()}


def test_table3_regenerates_byte_identically_from_the_chosen_files(default_run):
    config, tmp = default_run
    settings = th.hparams_settings(config, "photos")
    first = th.write_tables(settings, _inputs(config), tmp / "a" / "photos")
    second = th.write_tables(settings, _inputs(config), tmp / "b" / "photos")
    for p, q in zip(first, second):
        assert p.read_bytes() == q.read_bytes(), p.name
    t3 = pd.read_csv(tmp / "a" / "photos_table3_sampling.csv")
    cell = t3[(t3.task == "deblur") & (t3.variant == "po") & (t3.setting == "t_stop")].iloc[0]
    assert cell.value == "0.5" and cell.source == "val" and cell.paper == "0.25"
    assert "| t_stop | 0.5 † | 0.25 |" in (tmp / "a" / "photos_table3_sampling.md").read_text()
    # The table follows the chosen.yaml files: another t_stop, another table.
    chosen = tmp / "results/photos/deblur/dirac/tuning/chosen.yaml"
    data = yaml.safe_load(chosen.read_text())
    _write_tuning(chosen.parent, {**data, "po": {**data["po"], "t_stop": 0.0}})
    th.write_tables(settings, _inputs(config), tmp / "c" / "photos")
    assert (tmp / "c" / "photos_table3_sampling.md").read_bytes() != (tmp / "a" / "photos_table3_sampling.md").read_bytes()
    # Values refused by the chosen.yaml contract are refused here too.
    _write_tuning(chosen.parent, {**data, "po": {**data["po"], "zeta": 3.0}})
    (chosen.parent / "grid.csv").write_text(pd.read_csv(chosen.parent / "grid.csv").drop(columns=["param_zeta"]).to_csv(index=False))
    with pytest.raises(UserError, match="zeta"):
        th.write_tables(settings, _inputs(config), tmp / "d" / "photos")


def test_table2_counts_parameters_from_weights_when_present(default_run):
    config, tmp = default_run
    net, size = config["training"]["network"], config["datasets"]["photos"]["image_size"]
    model = build_model("dirac", net, size)
    path = tmp / "results/photos/deblur/models/dirac-dt1/weights.pt"
    path.parent.mkdir(parents=True)
    save_weights(path, "dirac", net, size, model.state_dict(), None, {})
    th.write_tables(th.hparams_settings(config, "photos"), _inputs(config), tmp / "out" / "photos")
    t2 = pd.read_csv(tmp / "out" / "photos_table2_networks.csv")
    expected = sum(p.numel() for p in model.parameters())
    deblur = t2[t2.model.str.contains("deblur")].iloc[0]
    assert deblur.parameters == f"{expected:,}" and deblur.weights == str(Path("results/photos/deblur/models/dirac-dt1/weights.pt"))
    inpaint = t2[t2.model.str.contains("inpaint")].iloc[0]
    assert inpaint.parameters == f"{expected:,} (not run)" and inpaint.weights == "not run"
    assert t2.model.str.contains("DDPM prior").any()


@pytest.mark.parametrize("preset_path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_get_tables_2_and_3_from_the_config_alone(preset_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    th.main(["--config", str(preset_path), "--out-dir", str(tmp_path / "tables")])
    config = _config(preset_path)
    for ds in config["datasets"]:
        t2 = pd.read_csv(tmp_path / "tables" / f"{ds}_table2_networks.csv")
        assert (t2.weights == "not run").all() and t2.parameters.str.endswith("not run)").all()
        # The config's networks, counted on the meta device, are the paper's counted sizes.
        dirac_rows = t2[t2.model.str.startswith("Dirac")]
        assert set(dirac_rows.parameters) <= {"67,745,027 (not run)", "520,915,459 (not run)"}
        t3 = pd.read_csv(tmp_path / "tables" / f"{ds}_table3_sampling.csv")
        # The presets fix the paper's values: every sampler setting equals the paper's column,
        # except the guidance sign (descent here, the official code's + there) and DO deblur's
        # guidance (the released config sets one that has no effect at t_stop 1).
        same = t3[~t3.setting.isin(["guidance_sign", "selected_by", "guidance", "zeta"])]
        assert (same.value == same.paper).all(), same[same.value != same.paper]
        assert (t3.source != "val").all()
        md = (tmp_path / "tables" / f"{ds}_table2_networks.md").read_text()
        assert "not run" in md and "paper" in md
