"""Config paths reach the shell quoted: a path holding `$(touch PWNED)` and a space is just a path.

The probe of issue 15: a `from_file` schedule path containing `$(touch PWNED)` ran that command,
and an ordinary path with a space broke the job. Here the real Snakemake runs the tiny workflow
up to the `schedule` rule with such a path; the job must succeed and no marker may appear.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from smk import TINY, copy_workflow, snakemake  # noqa: E402

pytestmark = pytest.mark.workflow

HOSTILE = "$(touch PWNED) a b"


def _tiny(**changes) -> dict:
    cfg = yaml.safe_load(TINY.read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


def _markers(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob("PWNED")]


def test_schedule_file_path_with_command_substitution_and_space_runs_safely(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    folder = tmp_path / HOSTILE
    folder.mkdir()
    sched = folder / "my schedule.txt"
    sched.write_text("# t, blur std in px\n0 0.3\n0.5 0.9\n1 1.5\n")
    cfg = _tiny(**{"tasks.deblur.schedule": {"kind": "from_file", "file": str(sched)}})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    snakemake("--cores", "2", "results/photos/deblur/schedule/schedule.csv", workdir=root, config=config, snakefile=root / "Snakefile", timeout=900)
    assert (root / "results/photos/deblur/schedule/schedule.csv").is_file()
    assert not _markers(root, tmp_path, Path.cwd()), "a command inside a config path was executed"


def test_pretrained_prior_path_reaches_the_command_as_one_word(tmp_path):
    """Dry run with -p: the printed DDRM command holds `prior=<path>` as one shell word."""
    root = copy_workflow(tmp_path / "wf")
    folder = tmp_path / HOSTILE
    folder.mkdir()
    ckpt = folder / "prior weights.pt"
    ckpt.write_bytes(b"not a real checkpoint; the dry run never opens it")
    # Published priors are 256 px models: full-scale photos so that 256 px training tiles exist.
    cfg = _tiny(**{"prior.pretrained": {"photos": {"path": str(ckpt), "format": "adm-ffhq"}}, "datasets.photos.image_size": 256, "datasets.photos.source.scale": 1.0})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "-p", "results/photos/deblur/ddrm/tuning/chosen.yaml", workdir=root, config=config, snakefile=root / "Snakefile", timeout=300)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "diracbench.tune --method ddrm" in line]
    assert lines, proc.stdout[-3000:]
    words = shlex.split(lines[0])
    assert f"prior={ckpt}" in words, words
    assert not _markers(root, tmp_path)
