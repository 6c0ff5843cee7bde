"""Config mistakes the README promises to reject before any job runs (issue 15, item 9).

Each probe used to pass `snakemake -n` and fail hours later (a torch traceback in train_prior
for the seed, tune_dirac after training for dt) or silently (a truncated blur kernel).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from smk import REPO, snakemake  # noqa: E402

pytestmark = pytest.mark.workflow

DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def _set(cfg: dict, path: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return cfg


PROBES = [
    ("seed of 2**64", "seed", 2**64, "seed"),
    ("Dirac dt not dividing 1", "dirac.tasks.deblur.po.dt", 0.3, "dirac.tasks.deblur.po.dt"),
    ("batch larger than the training split", "training.batch_size", 100_000, "training.batch_size"),
    ("unbounded LPIPS upsampling", "metrics.lpips_upsample_below", 10**9, "metrics.lpips_upsample_below"),
    ("blur window narrower than 6 std", "tasks.deblur.operator.kernel_size", 17, "tasks.deblur.operator.kernel_size"),
]


@pytest.mark.parametrize("name, key, value, named", PROBES, ids=[p[0] for p in PROBES])
def test_rejected_by_a_dry_run_naming_the_key(tmp_path, name, key, value, named):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_set(DEFAULT, key, value)))
    proc = snakemake("-n", config=bad, workdir=tmp_path, check=False, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    lines = [line for line in out.splitlines() if named in line and ("config key" in line or line.strip().startswith("- "))]
    assert len(lines) == 1, out[-2000:]
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


def test_the_default_config_passes_the_new_checks(tmp_path):
    from diracbench.configcheck import check_config

    check_config(copy.deepcopy(DEFAULT))
    for preset in sorted((REPO / "workflow" / "presets").glob("*.yaml")):
        check_config(yaml.safe_load(preset.read_text()))
    check_config(yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text()))
