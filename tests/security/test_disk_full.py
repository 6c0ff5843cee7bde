"""A full disk during a save is one line naming the file, not a torch/numpy traceback (issue 15, item 9).

A real full filesystem: a 16 KiB tmpfs mounted in a private mount namespace (`unshare -rm`, no
root needed where user namespaces are allowed). The stages write through diracbench.io.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run_on_full_disk(tmp_path: Path, python_args: list[str], size: str = "16k") -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mnt))}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")
    cmd = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mnt))} && exec " + shlex.join([sys.executable, *python_args])
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_prepare_data_on_a_full_disk_says_so_in_one_line(tmp_path):
    settings = {
        "name": "photos", "image_size": 16, "seed": 0,
        "source": {"kind": "photos", "scale": 0.25, "train_stride": 16, "min_tile_std": 0.04,
                   "splits": {"train": ["chelsea", "rocket", "flower"], "val": ["coffee"], "test": ["astronaut"]},
                   "limits": {"train": 64, "val": 4, "test": 4}},
    }
    out = tmp_path / "small" / "data"
    proc = _run_on_full_disk(tmp_path, ["-m", "diracbench.data", "--settings", json.dumps(settings), "--out-dir", str(out), "--threads", "1"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no space left on device while writing" in lines[0] and str(out) in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_torch_save_on_a_full_disk_says_so_in_one_line(tmp_path):
    target = tmp_path / "small" / "weights.pt"
    code = (
        "import torch\n"
        "from diracbench import cli\n"
        "from diracbench.nn.models import save_weights\n"
        "net = {'model_channels': 8, 'channel_mult': [1, 2], 'num_blocks': 1, 'attn_resolutions': [], 'dropout': 0.0}\n"
        f"cli.run(lambda argv: save_weights({str(target)!r}, 'dirac', net, 16, {{'w': torch.zeros(200_000)}}, None, {{}}), [], 'probe')\n"
    )
    proc = _run_on_full_disk(tmp_path, ["-c", code])
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"no space left on device while writing {target}" in lines[0], proc.stderr[-3000:]
