"""The `seeds` target: replicates `<dataset>-seed<N>` retrain only the learned models with their own
training seed and rebuild only the methods that use them; everything else comes from the main run
(dry runs of the embedded default; the real run is reported in the README)."""

from __future__ import annotations

import json
import re

import pytest

from smk import REPO, job_counts, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
DEFAULT = REPO / "config.yaml"


def test_seeds_rebuild_the_learned_methods_per_seed(tmp_path):
    out = snakemake("-n", "-p", "seeds", config=DEFAULT, workdir=tmp_path, timeout=300)
    text = out.stdout + out.stderr
    counts, jobs = job_counts(text), planned_jobs(text)
    replicas = {w["dataset"] for _, w in jobs if "dataset" in w} - {"photos"}
    assert replicas == {"photos-seed1", "photos-seed2"}
    # Per replicate: two Dirac models and one prior; on top of the main run's two and one.
    trained = [(r, w["dataset"]) for r, w in jobs if r in ("train_dirac", "train_prior")]
    assert sorted(trained) == sorted([(r, d) for d in ("photos", "photos-seed1", "photos-seed2") for r in ("train_dirac", "train_dirac", "train_prior")])
    rebuilt = {w.get("method") or f"dirac-{w['variant']}" for r, w in jobs if r.startswith("gather_") and w["dataset"] != "photos"}
    assert rebuilt == {"dirac-po", "dirac-do", "dps", "ddrm"}  # PnP-ADMM and ADMM-TV train nothing
    assert counts["seeds_tables"] == 1 and "tables" not in counts
    # The training seed differs per replicate; the measurement noise seeds do not.
    seeds = {}
    for line in text.splitlines():
        m = re.search(r"diracbench\.train --kind (\w+) --settings '(\{.*?\})'.*--data results/([^/]+)/data", line)
        if m:
            seeds.setdefault(m.group(3), set()).add(json.loads(m.group(2))["training"]["seed"])
    assert seeds == {"photos": {0}, "photos-seed1": {1}, "photos-seed2": {2}}
    measured = {json.loads(m.group(1))["dataset"] for m in re.finditer(r"diracbench\.measure --settings '(\{.*?\})'", text)}
    assert measured == {"photos"}


def test_a_seed_equal_to_the_main_seed_is_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(DEFAULT.read_text().replace("training: [1, 2]", "training: [0, 1]"))
    out = snakemake("-n", "seeds", config=cfg, workdir=tmp_path, timeout=300, check=False)
    assert out.returncode != 0 and "seeds.training repeats the main run's seed 0" in out.stdout + out.stderr
