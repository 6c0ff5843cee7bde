"""The method and metric registries, and the import graph behind the workflow's code= inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diracbench.codegraph import import_closure
from diracbench.errors import UserError
from diracbench.methods import registry as methods_registry
from diracbench.metrics import registry as metrics_registry

SRC = Path(__file__).resolve().parents[2] / "src"
SCHEMAS = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
PLUMBING = ("diracbench.cli", "diracbench.errors", "diracbench.progress", "diracbench.provenance")


def test_the_seven_methods_are_registered_in_table_order():
    specs = methods_registry.registry()
    assert list(specs) == ["dirac-po", "dirac-do", "dps", "diffpir", "ddrm", "pnp-admm", "admm-tv"]
    assert [s.display for s in specs.values()] == ["Dirac-PO", "Dirac-DO", "DPS", "DiffPIR", "DDRM", "PnP-ADMM", "ADMM-TV"]
    assert {m for m, s in specs.items() if s.env == "scico"} == {"pnp-admm", "admm-tv"}
    assert specs["dps"].inputs == ("prior",) and specs["dps"].module == "diracbench.methods.dps"
    with pytest.raises(UserError, match="registered methods"):
        methods_registry.spec("no-such-method")


def test_reading_the_registries_imports_no_torch():
    code = ("import sys; from diracbench.methods.registry import registry; from diracbench.metrics.registry import METRICS, auto_objective; "
            "import diracbench.tables, diracbench.tasks; registry(); diracbench.tasks.registry(); auto_objective('deblur'); "
            "print('torch' in sys.modules, 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_tasks_come_from_their_operator_modules_with_title_and_objective(tmp_path):
    from diracbench import tasks

    reg = tasks.registry()
    assert list(reg)[:2] == ["deblur", "inpaint"]
    assert (reg["deblur"].operator, reg["deblur"].objective) == ("blur", "lpips")
    assert (reg["inpaint"].operator, reg["inpaint"].objective) == ("inpaint", "fd_vgg")
    assert metrics_registry.auto_objective("inpaint") == "fd_vgg" and tasks.task_title("deblur") == "Gaussian deblurring"
    # An unregistered task is an error naming the registered ones, never a silent FD-VGG default.
    with pytest.raises(UserError, match="unknown task 'denoise'.*deblur"):
        metrics_registry.auto_objective("denoise")
    (tmp_path / "op.py").write_text('TASK_SPECS = {"x2": {"operator": "zoom", "title": "Zoom", "objective": "psnr", "colour": 1}}\n')
    with pytest.raises(UserError, match="unknown keys"):
        tasks._discover(str(tmp_path))


def _specs_in(folder: Path, source: str):
    folder.mkdir()
    (folder / "mod.py").write_text(source)
    return methods_registry._discover(str(folder))


def test_a_spec_that_is_not_a_literal_is_refused_with_its_file(tmp_path):
    specs = _specs_in(tmp_path / "a", 'METHOD_SPECS = {"good": {"display": "Good", "env": "scico"}}\n')
    assert specs["good"].device == "cpu" and specs["good"].section == "good" and specs["good"].module == "diracbench.methods.mod"
    with pytest.raises(UserError, match=r"mod\.py: METHOD_SPECS must be a literal"):
        _specs_in(tmp_path / "b", 'NAME = "x"\nMETHOD_SPECS = {NAME: {"display": "X"}}\n')
    with pytest.raises(UserError, match="env is 'tensorflow'"):
        _specs_in(tmp_path / "c", 'METHOD_SPECS = {"x": {"display": "X", "env": "tensorflow"}}\n')
    with pytest.raises(UserError, match="unknown keys"):
        _specs_in(tmp_path / "d", 'METHOD_SPECS = {"x": {"display": "X", "colour": "red"}}\n')


def test_section_defaults_merge_one_level_deep():
    dps = methods_registry.spec("dps")
    merged = dps.settings({"dps": {"hparams": {"steps": 10}, "grid": {"deblur": {"scale": [0.1]}}}})
    assert merged["hparams"]["steps"] == 10 and merged["hparams"]["scale"] == dps.defaults["hparams"]["scale"]
    assert merged["grid"]["deblur"] == {"scale": [0.1]} and merged["grid"]["inpaint"] == dps.defaults["grid"]["inpaint"]
    assert dps.settings({}) == {**methods_registry.BASE_DEFAULTS, **dps.defaults}
    with pytest.raises(UserError, match="config key dirac is missing"):
        methods_registry.spec("dirac-po").settings({})


OBJECTIVE_KEYS = ("objective", "po_metric", "do_metric")


def test_objective_enums_of_every_schema_equal_the_metric_registry():
    objectives = set(metrics_registry.objectives())
    found = []
    for path in sorted(SCHEMAS.glob("*.schema.yaml")):
        for key, node in _items(yaml.safe_load(path.read_text())):
            if key in OBJECTIVE_KEYS and isinstance(node, dict) and "enum" in node:
                found.append(path.name)
                assert set(node["enum"]) - {"auto"} == objectives, (path.name, key, node["enum"])
    # dps, diffpir, ddrm, pnp-admm, admm-tv, the generic method schema, and Dirac's po_metric and do_metric
    assert len(found) == 8, found


def _items(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _items(v)
    elif isinstance(node, list):
        for v in node:
            yield from _items(v)


def test_objectives_have_one_spelling():
    assert metrics_registry.resolve_objective("auto", "inpaint") == "fd_vgg"
    assert metrics_registry.resolve_objective("auto", "deblur") == "lpips"
    with pytest.raises(UserError, match="spelled 'fd_vgg'"):
        metrics_registry.resolve_objective("fd-vgg", "deblur")
    assert metrics_registry.better("psnr") == "max" and metrics_registry.better("fd_vgg") == "min"


def test_tables_take_a_newly_registered_metric_as_a_column(monkeypatch):
    import pandas as pd

    from diracbench import tables

    new = metrics_registry.Metric("sharpness", "image", True, 3, "Sharp↑", r"Sharp$\uparrow$", "x:y", caption="Sharpness: {note}.")
    monkeypatch.setitem(metrics_registry.METRICS, "sharpness", new)
    rows = []
    for method, value in (("dps", 0.5), ("ddrm", 0.7), ("y", 0.1)):
        for metric in ("psnr", "sharpness"):
            rows.append({"dataset": "d", "task": "deblur", "method": method, "metric": metric, "n": 4, "mean": value,
                         "ci_low": value, "ci_high": value, "ci_level": 0.95, "note": "made up" if metric == "sharpness" else ""})
    table = tables.build_table(pd.DataFrame(rows), "d", ["deblur"], ["dps", "ddrm"])
    md, tex = tables.to_markdown(table), tables.to_latex(table)
    assert "Sharp↑" in md and r"Sharp$\uparrow$" in tex and "- Sharpness: made up." in md
    assert "**0.700**" in md and "0.500" in md  # digits and the best value from the entry


def test_code_inputs_follow_imports_not_hand_kept_lists():
    rel = lambda files: {str(p.relative_to(SRC / "diracbench")) for p in files}
    tune_dps = rel(import_closure(["diracbench.tune", "diracbench.methods.dps"], PLUMBING))
    assert {"tune.py", "methods/dps.py", "prior/sampling.py", "metrics/perceptual.py", "io.py", "__init__.py", "methods/__init__.py"} <= tune_dps
    assert not any(f.startswith(("train", "training/", "methods/ddrm", "cli.py")) for f in tune_dps), tune_dps
    figures = rel(import_closure(["diracbench.figures"], PLUMBING))
    # Fig. 7 reads its axis label from the operator family's own declaration, through the registry.
    assert "operators/registry.py" in figures and "runtime.py" in figures
    with pytest.raises(ValueError, match="not a module"):
        import_closure(["diracbench.nowhere"])


def test_relative_and_from_imports_are_followed(tmp_path):
    pkg = tmp_path / "diracbench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..other import g\n")
    (pkg / "other.py").write_text("import numpy\nfrom typing import TYPE_CHECKING\nfrom diracbench import helper\nif TYPE_CHECKING:\n    from diracbench import annotations_only\n")
    (pkg / "helper.py").write_text("")
    (pkg / "unused.py").write_text("")
    (pkg / "annotations_only.py").write_text("")  # imported for type checkers only: never run
    files = {p.name for p in import_closure(["diracbench.sub"], root=pkg)}
    assert files == {"__init__.py", "leaf.py", "other.py", "helper.py"}
