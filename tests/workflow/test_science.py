"""Tables 2-3, the claims table and the ablations target in real Snakemake DAGs."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from smk import REPO, job_counts, planned_jobs, snakemake
from test_presets import PRESETS, lay_out_fake_inputs

pytestmark = pytest.mark.workflow


def test_tiny_run_has_tables_2_3_and_claims_that_regenerate_byte_identically(tiny_run, tmp_path):
    root, config = tiny_run
    tables = root / "results" / "tables"
    names = [f"photos_table{n}.{ext}" for n in ("2_networks", "3_sampling") for ext in ("md", "tex", "csv", "html")]
    for name in names + ["photos_claims.md", "photos_claims.csv", "photos_claims.html"]:
        assert (tables / name).is_file(), name
    # Tables 2-3 are a function of the config, the chosen.yaml files and the weights: the stage run
    # on the config alone, in the finished run's folder, writes the same bytes as the rule did.
    subprocess.run([sys.executable, "-m", "diracbench.tables_hparams", "--config", str(config), "--out-dir", str(tmp_path)], cwd=root, check=True, env={**os.environ, "PYTHONPATH": str(root / "src")})
    for name in names:
        assert (tmp_path / name).read_bytes() == (tables / name).read_bytes(), name
    # The tiny inpainting search reaches Table 3: its PO values were chosen on val (†).
    t3 = pd.read_csv(tables / "photos_table3_sampling.csv")
    po = t3[(t3.task == "inpaint") & (t3.variant == "po")].set_index("setting")
    assert po.loc["model_dt", "source"] == "val" and po.loc["guidance", "source"] == "val" and po.loc["output", "source"] == "config"
    chosen = yaml.safe_load((root / "results/photos/inpaint/dirac/tuning/chosen.yaml").read_text())
    assert {"model_dt", "guidance", "zeta"} <= set(chosen["po"]) and "dt" in chosen["do"]
    t2 = pd.read_csv(tables / "photos_table2_networks.csv")
    assert not t2.parameters.str.contains("not run").any()  # every model of the run was trained
    claims = pd.read_csv(tables / "photos_claims.csv", dtype=str, keep_default_na=False)
    assert len(claims) == 5 * 2 and set(claims.holds) <= {"true", "false", "n/a"} and (claims.numbers != "").all()


def test_ablations_target_trains_only_the_additional_look_aheads_and_reuses_the_tuning(tiny_run):
    root, config = tiny_run
    proc = snakemake("-n", "ablations", workdir=root, config=config, snakefile=root / "Snakefile", timeout=300)
    out = proc.stdout + proc.stderr
    jobs = planned_jobs(out)
    trained = sorted((w["task"], w["dt"]) for r, w in jobs if r == "train_dirac")
    # tiny: deblur trains dt 1, inpaint dt 0 and 1; the ablation asks for dt 0, 0.5 and 1.
    assert trained == [("deblur", "0"), ("deblur", "0.5"), ("inpaint", "0.5")]
    counts = job_counts(out)
    assert counts == {"train_dirac": 3, "ablation_guidance": 2, "ablation_lookahead": 2, "ablation_lookahead_path": 2, "figure_ablation_guidance": 2, "figure_ablation_lookahead": 2, "ablations": 1}, counts
    # The ablations target is not part of `all`: the finished tiny run has nothing to do.
    assert "Nothing to be done" in snakemake("-n", workdir=root, config=config, snakefile=root / "Snakefile", timeout=300).stdout


def test_default_ablations_dag_adds_one_model_per_additional_look_ahead(tmp_path):
    cfg = REPO / "config.yaml"
    everything = job_counts(snakemake("-n", config=cfg, workdir=tmp_path, timeout=300).stdout)
    ablation = job_counts(snakemake("-n", "ablations", config=cfg, workdir=tmp_path, timeout=300).stdout)
    default = yaml.safe_load(cfg.read_text())
    extra = {0.0, 0.25, 0.5, 1.0}  # the documented default of ablations.look_aheads
    core = [t for t in default["tasks"] if t not in default["extended"]["tasks"]]  # ablations follow `all`'s tasks
    expected = sum(len(extra | set(default["dirac"]["tasks"][t]["look_aheads"])) for t in core)
    assert everything["train_dirac"] == 2 and ablation["train_dirac"] == expected == 8
    assert ablation["tune_dirac"] == everything["tune_dirac"] == 2  # the ablation reads the default's chosen.yaml
    assert everything["tables_hparams"] == 1 and everything["claims"] == 1
    assert "ablation_guidance" not in everything and "train_prior" not in ablation


@pytest.mark.parametrize("preset_path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_plan_tables_2_3_and_claims(preset_path, tmp_path):
    preset = yaml.safe_load(preset_path.read_text())
    lay_out_fake_inputs(preset, tmp_path)
    counts = job_counts(snakemake("-n", config=preset_path, workdir=tmp_path, timeout=300).stdout)
    assert counts.get("tables_hparams") == 1 and counts.get("claims") == 1
