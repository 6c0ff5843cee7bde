"""The `plan` target dry-runs for both presets, and a walltime too short for any sharding stops the
DAG build with the documented one-line error."""

from __future__ import annotations

import pytest
import yaml

from smk import REPO, job_counts, snakemake
from test_presets import PRESETS, lay_out_fake_inputs

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize("preset_path", PRESETS, ids=[p.stem for p in PRESETS])
def test_plan_target_dry_runs_for_the_presets(preset_path, tmp_path):
    preset = yaml.safe_load(preset_path.read_text())
    lay_out_fake_inputs(preset, tmp_path)
    proc = snakemake("-n", "plan", config=preset_path, workdir=tmp_path, timeout=600)
    assert job_counts(proc.stdout + proc.stderr) == {"plan": 1}


def test_a_walltime_too_short_for_any_sharding_fails_the_dry_run(tmp_path):
    preset = yaml.safe_load((REPO / "workflow" / "presets" / "paper-ffhq.yaml").read_text())
    lay_out_fake_inputs(preset, tmp_path)
    preset["cluster"]["max_walltime_min"] = 10  # one DPS batch of 8 images needs ~25 min on an A100
    config = tmp_path / "short.yaml"
    config.write_text(yaml.safe_dump(preset))
    proc = snakemake("-n", config=config, workdir=tmp_path, check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "more than cluster.max_walltime_min 10" in out and "raise cluster.max_walltime_min" in out
