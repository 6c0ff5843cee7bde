"""Per-image network figures for the planner, cached so that most DAG builds import no torch.

The counting itself (meta device, FlopCounterMode, saved-tensor and live-memory tracking) is in
`plan.meta`; this module keys its results by the network spec, the modes, bf16, the torch version
and COUNT_VERSION, and keeps them in this process and in a JSON file shared between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

COUNT_VERSION = 1  # bump when the counting changes, to invalidate cached figures
_MEMO: dict[str, dict] = {}


def _torch_version() -> str:
    try:
        return metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return "?"


def count_network(spec: dict, modes: tuple[str, ...] = ("infer", "input_grad", "train"), bf16: bool = False, cache_file: str | Path | None = None) -> dict:
    """Per-image figures of a network for each mode (see the module docstring), cached."""
    key = hashlib.sha256(json.dumps({"spec": spec, "modes": list(modes), "bf16": bf16, "v": COUNT_VERSION, "torch": _torch_version()}, sort_keys=True).encode()).hexdigest()[:20]
    if key in _MEMO:
        return _MEMO[key]
    disk = _read_cache(cache_file)
    if key in disk:
        _MEMO[key] = disk[key]
        return disk[key]
    from diracbench.plan.meta import count_modes

    result = count_modes(spec, tuple(modes), bf16)
    _MEMO[key] = result
    if cache_file is not None:
        _write_cache(cache_file, key, result)
    return result


def _read_cache(path: str | Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs a recount


def _write_cache(path: str | Path, key: str, value: dict) -> None:
    from diracbench.io import atomic_path

    path = Path(path)
    try:
        data = _read_cache(path)
        data[key] = value
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, sort_keys=True))
    except OSError:
        pass  # a read-only cache folder: keep the in-process memo only


def default_cache_file() -> Path | None:
    """$DIRACBENCH_PLAN_CACHE, else ~/.cache/diracbench/plan-counts.json ('' disables it)."""
    env = os.environ.get("DIRACBENCH_PLAN_CACHE")
    if env is not None:
        return Path(env) if env else None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "diracbench" / "plan-counts.json"
