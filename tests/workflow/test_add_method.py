"""Adding a method takes its module and a config entry: nothing else in the project changes.

A copy of the project gets one new file, `src/diracbench/methods/adjoint.py` (a toy method:
the adjoint A^T y times a gain tuned on val, with its METHOD_SPECS registry entry), and a config
that lists it (with a partial section; the rest comes from the entry's defaults). The real
workflow then tunes, samples, scores and tabulates it.
"""

from __future__ import annotations

import pytest
import yaml

from smk import TWO_JOBS_AT_ONCE, copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

ADJOINT = '''"""Toy method: the adjoint A^T y of the measurement, times a gain tuned on val."""

from __future__ import annotations

import numpy as np

from diracbench.methods.base import Problem, Reconstruction, RunContext

METHOD_SPECS = {
    "adjoint": {
        "display": "Adjoint A^T y",
        "order": 70,
        "env": "torch",
        "tunes": ["gain"],
        "defaults": {
            "hparams": {"gain": 1.0, "batch_size": 4},
            "grid": {"deblur": {"gain": [0.8, 1.0]}, "inpaint": {"gain": [1.0]}},
            "objective": "psnr",
        },
    },
}


def reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction:
    x_hat = problem.operator.adjoint(problem.y) * float(hparams["gain"])
    n = len(problem)
    return Reconstruction(x_hat.detach().cpu().numpy(), nfe=np.zeros(n), seconds=np.zeros(n))
'''


def test_a_new_method_module_and_config_entry_reach_the_table(tmp_path):
    root = copy_workflow(tmp_path / "work")
    before = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    (root / "src" / "diracbench" / "methods" / "adjoint.py").write_text(ADJOINT)
    config = yaml.safe_load((root / "tests" / "configs" / "tiny.yaml").read_text())
    config["methods"] = ["adjoint"]
    config["adjoint"] = {"grid": {"inpaint": {"gain": [0.5, 1.0]}}}  # one task's grid; the rest from the defaults
    config_path = tmp_path / "adjoint.yaml"
    config_path.write_text(yaml.safe_dump(config))
    after = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert set(after) - set(before) == {__import__("pathlib").Path("src/diracbench/methods/adjoint.py")}

    dry = snakemake("-n", "results/tables/photos.md", workdir=root, config=config_path, snakefile=root / "Snakefile")
    planned = {(rule, wc.get("method")) for rule, wc in planned_jobs(dry.stdout)}
    assert {("tune_method_torch", "adjoint"), ("sample_method_torch", "adjoint"), ("gather_method", "adjoint"), ("metrics", "adjoint"), ("tables", None)} <= planned
    assert not any(rule.startswith("train") for rule, _ in planned)  # the toy method needs no model

    snakemake(*TWO_JOBS_AT_ONCE, "results/tables/photos.md", workdir=root, config=config_path, snakefile=root / "Snakefile", timeout=1200)
    table = (root / "results" / "tables" / "photos.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| Adjoint A^T y |")]
    assert len(rows) == 1, table
    assert "—" not in rows[0].split("|")[2], rows[0]  # a PSNR value, not a missing cell
    chosen = yaml.safe_load((root / "results" / "photos" / "inpaint" / "adjoint" / "tuning" / "chosen.yaml").read_text())
    assert chosen["gain"] in (0.5, 1.0)
