"""Intermediate files are checked against their contracts where they are read (issue 15, item 8).

Probes reproduced: a chosen.yaml edited to values outside the tuning grid was used silently
(ADMM-TV fell from 23.69 to 17.15 dB); an aggregate.csv without its PSNR row printed a dash in
Table 1; a per_image.csv cut mid-line was plotted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from diracbench.contracts import AGGREGATE_METRICS, PER_IMAGE_COLUMNS, check_chosen
from diracbench.errors import UserError
from diracbench.figures import read_csv as figures_read_csv
from diracbench.sample import read_tuned
from diracbench.tables import read_aggregates


def _tuning_dir(tmp_path, method="admm-tv"):
    d = tmp_path / "results" / "photos" / "deblur" / method / "tuning"
    d.mkdir(parents=True)
    return d


def _write_grid_tuning(d, chosen: dict):
    """grid.csv and chosen.yaml in the layout diracbench.tune writes for a grid search."""
    grid = pd.DataFrame(
        {"param_lam": [0.01, 0.01, 0.05, 0.05], "param_rho": [0.1, 0.3, 0.1, 0.3], "psnr": [23.7, 23.1, 22.0, 21.5], "lpips": [0.40, 0.42, 0.45, 0.47]}
    )
    grid["objective"] = "lpips"
    grid["chosen"] = [True, False, False, False]
    grid.to_csv(d / "grid.csv", index=False)
    (d / "chosen.yaml").write_text(yaml.safe_dump(chosen, sort_keys=True))
    return d / "chosen.yaml"


def test_untampered_grid_choice_is_read(tmp_path):
    path = _write_grid_tuning(_tuning_dir(tmp_path), {"lam": 0.01, "rho": 0.1})
    assert read_tuned(str(path), {"maxiter": 200}) == {"lam": 0.01, "rho": 0.1}


def test_chosen_value_outside_the_grid_is_refused_naming_file_and_rule(tmp_path):
    path = _write_grid_tuning(_tuning_dir(tmp_path), {"lam": 0.5, "rho": 0.1})
    with pytest.raises(UserError) as err:
        read_tuned(str(path), {"maxiter": 200})
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "lam" in msg and "not in the tuning grid" in msg and "tune_admm_tv" in msg


def test_another_grid_point_than_the_chosen_one_is_refused(tmp_path):
    path = _write_grid_tuning(_tuning_dir(tmp_path), {"lam": 0.05, "rho": 0.3})
    with pytest.raises(UserError, match="not the grid point marked chosen"):
        read_tuned(str(path), {})


def test_an_injected_fixed_setting_is_refused_unless_it_equals_the_config(tmp_path):
    path = _write_grid_tuning(_tuning_dir(tmp_path), {"lam": 0.01, "rho": 0.1, "maxiter": 1})
    with pytest.raises(UserError, match="maxiter"):
        read_tuned(str(path), {"maxiter": 200})
    assert read_tuned(str(path), {"maxiter": 1})["maxiter"] == 1


def test_chosen_without_its_grid_is_refused(tmp_path):
    path = _write_grid_tuning(_tuning_dir(tmp_path), {"lam": 0.01, "rho": 0.1})
    (path.parent / "grid.csv").unlink()
    with pytest.raises(UserError, match="no grid.csv"):
        read_tuned(str(path), {})


def _write_dirac(tmp_path, po_t: float, do_t: float):
    d = _tuning_dir(tmp_path, "dirac")
    rows = []
    for v, best in (("po", 0.5), ("do", 1.0)):
        for t in (1.0, 0.75, 0.5, 0.25, 0.0):
            rows.append({"variant": v, "step": 0, "t": t, "nfe": 1, "psnr": 20.0, "lpips": 0.4, "chosen": t == best})
    pd.DataFrame(rows).to_csv(d / "grid.csv", index=False)
    info = {"by": "lpips", "value": 0.4, "split": "val", "n_images": 4, "quantity": "x0_hat"}
    chosen = {"po": {"t_stop": po_t, "nfe": 3, "selected_by": info}, "do": {"t_stop": do_t, "nfe": 1, "selected_by": info}}
    (d / "chosen.yaml").write_text(yaml.safe_dump(chosen))
    return d / "chosen.yaml"


def test_dirac_t_stop_must_be_the_chosen_grid_step(tmp_path):
    path = _write_dirac(tmp_path, 0.5, 1.0)
    assert read_tuned(f"{path}:po", {"t_stop": "tune", "dt": 0.25})["t_stop"] == 0.5
    bad = _write_dirac(tmp_path / "b", 0.3, 1.0)
    with pytest.raises(UserError, match="tune_dirac"):
        read_tuned(f"{bad}:po", {"t_stop": "tune", "dt": 0.25})


def test_dirac_t_stop_declared_fixed_in_the_config_is_accepted_only_as_declared(tmp_path):
    path = _write_dirac(tmp_path, 0.3, 1.0)  # config fixes po t_stop = 0.3 (nearest grid row 0.25)
    assert read_tuned(f"{path}:po", {"t_stop": 0.3, "dt": 0.25})["t_stop"] == 0.3
    with pytest.raises(UserError, match="differs from the value the config fixes"):
        read_tuned(f"{path}:po", {"t_stop": 0.7, "dt": 0.25})


# ---------------------------------------------------------------------------------------------
# Metric CSVs


def test_contract_metric_lists_equal_the_metrics_stage():
    from diracbench.metrics.evaluate import PER_IMAGE_METRICS, SET_METRICS

    assert AGGREGATE_METRICS == tuple(PER_IMAGE_METRICS) + tuple(SET_METRICS)
    assert PER_IMAGE_COLUMNS == ("name",) + tuple(PER_IMAGE_METRICS)


def _agg_csv(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "aggregate.csv"
    frame.to_csv(path, index=False, float_format="%.8g")
    return path


def _full_aggregate() -> pd.DataFrame:
    rows = [{"dataset": "photos", "task": "deblur", "method": "admm-tv", "metric": m, "n": 6, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "ci_level": 0.95, "note": ""} for m in AGGREGATE_METRICS]
    return pd.DataFrame(rows)


def test_complete_aggregate_is_read(tmp_path):
    df = read_aggregates([_agg_csv(tmp_path, _full_aggregate())])
    assert set(df.metric) == set(AGGREGATE_METRICS)


def test_aggregate_missing_its_psnr_row_is_refused(tmp_path):
    frame = _full_aggregate()
    path = _agg_csv(tmp_path, frame[frame.metric != "psnr"])
    with pytest.raises(UserError) as err:
        read_aggregates([path])
    assert "missing rows ['psnr']" in str(err.value) and "'metrics' rule" in str(err.value) and str(path) in str(err.value)


def test_aggregate_cut_mid_line_is_refused(tmp_path):
    path = _agg_csv(tmp_path, _full_aggregate())
    text = path.read_text()
    path.write_text(text[: len(text) - 7])
    with pytest.raises(UserError, match="incomplete"):
        read_aggregates([path])


def _per_image(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"name": [f"photo/im{i}" for i in range(5)], **{m: rng.random(5) for m in PER_IMAGE_COLUMNS[1:]}})
    path = tmp_path / "per_image.csv"
    df.to_csv(path, index=False, float_format="%.8g")
    return path


def test_per_image_csv_is_read_when_complete(tmp_path):
    df = figures_read_csv(_per_image(tmp_path), ("name", "psnr", "lpips"), "the 'metrics' rule")
    assert len(df) == 5


@pytest.mark.parametrize("cut", [5, 20, 40])
def test_per_image_csv_cut_mid_line_is_refused(tmp_path, cut):
    path = _per_image(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) - cut])
    # pandas alone reads this file without complaint (NaN tail): the probe of issue 15.
    assert len(pd.read_csv(path)) >= 4
    with pytest.raises(UserError) as err:
        figures_read_csv(path, ("name", "psnr", "lpips"), "the 'metrics' rule")
    assert "incomplete" in str(err.value) and "'metrics' rule" in str(err.value) and "\n" not in str(err.value)


def test_check_chosen_names_the_rule_from_the_folder(tmp_path):
    path = _write_grid_tuning(_tuning_dir(tmp_path, "pnp-admm"), {"lam": 9.0, "rho": 0.1})
    with pytest.raises(UserError, match="tune_pnp_admm"):
        check_chosen(path, {"lam": 9.0, "rho": 0.1})
