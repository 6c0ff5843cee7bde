"""`device:` reaches every GPU rule's --device; the presets ask for CUDA; switching it reruns no result."""

from __future__ import annotations

import re

import pytest
import yaml

from smk import REPO, copy_workflow, planned_jobs, snakemake
from test_presets import lay_out_fake_inputs

pytestmark = pytest.mark.workflow

GPU_RULES = {"train_dirac", "tune_dirac", "sample_dirac", "tune_method_torch", "sample_method_torch"}  # the torch pair runs DPS and DDRM


def commands_by_rule(dry_run_output: str) -> dict[str, list[str]]:
    """rule -> the shell commands `snakemake -n -p` printed for its jobs."""
    out: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule )", dry_run_output):
        m = re.match(r"(?:local)?rule (\S+):", block)
        # Training commands pick their launcher first (python, or torchrun for several processes).
        cmd = re.search(r"^(?:Shell command:)?\s*((?:if \[.*?fi; \$launch|python) -m diracbench\S* .*)$", block, re.M)
        if m and cmd:
            out.setdefault(m.group(1), []).append(cmd.group(1))
    return out


def test_the_ffhq_preset_runs_every_gpu_rule_with_device_cuda(tmp_path):
    preset_path = REPO / "workflow" / "presets" / "paper-ffhq.yaml"
    lay_out_fake_inputs(yaml.safe_load(preset_path.read_text()), tmp_path)
    proc = snakemake("-n", "-p", "--cores", "8", config=preset_path, workdir=tmp_path, timeout=300)
    commands = commands_by_rule(proc.stdout + proc.stderr)
    assert GPU_RULES <= set(commands), sorted(commands)
    for rule in GPU_RULES:
        assert all("--device cuda " in c for c in commands[rule]), (rule, commands[rule][0])
    for rule in set(commands) - GPU_RULES:  # CPU rules never demand CUDA
        assert not any("--device cuda" in c for c in commands[rule]), rule
    # The preset's job_threads (4) reach every tuning, sampling and schedule job; metrics keep 1.
    threads = yaml.safe_load(preset_path.read_text())["job_threads"]
    assert threads == 4
    for rule in ("schedule", "tune_dirac", "sample_dirac", "tune_method_torch", "sample_method_torch", "tune_method_scico", "sample_method_scico"):
        assert commands.get(rule) and all(f"--threads {threads} " in c for c in commands[rule]), (rule, commands.get(rule, [""])[0][-200:])
    assert all("--threads 1 " in c for c in commands["metrics"])


def test_switching_device_reruns_no_finished_gpu_job(tmp_path):
    """A finished GPU job (the tiny prior) stays finished when `device` changes; a science key reruns it."""
    root = copy_workflow(tmp_path / "wf")
    config = root / "tests" / "configs" / "tiny.yaml"
    target = "results/photos/prior/weights.pt"

    def run(*args: str) -> str:
        proc = snakemake(target, *args, workdir=root, config=config, snakefile=root / "Snakefile")
        return proc.stdout + proc.stderr

    run("--cores", "2")
    for device in ("cpu", "cuda"):
        assert "Nothing to be done" in run("-n", "--config", f"device={device}"), device
    assert {rule for rule, _ in planned_jobs(run("-n", "--config", "seed=1"))} >= {"train_prior"}  # the control
