"""Contracts of the intermediate files, checked where they are read.

A stage that reads another stage's output trusts nothing it could check cheaply:
- `chosen.yaml` (tuning rules): every value is the grid point that `grid.csv` beside it (written
  by the same job, in the same atomic set) marks as chosen (Dirac: its t_stop is the chosen row's
  `t`, and searched settings are `param_` columns), or a value the config declares fixed;
  informational keys (`nfe`, `selected_by`) are ignored; anything else is refused.
- CSVs (metrics, trajectories, schedules): complete — a final newline and, on every line, as
  many fields as the header (a file cut mid-line is refused, not read with a NaN tail).
- `aggregate.csv` (metrics rule): exactly one row per metric of `AGGREGATE_METRICS`.

Each refusal is one line naming the file and the rule to rerun. Torch-free and cheap.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping

from diracbench.errors import UserError

# Rows of every metrics/aggregate.csv: per-image metrics, then set-level ones (kept equal to
# metrics.evaluate.PER_IMAGE_METRICS + SET_METRICS by a unit test).
AGGREGATE_METRICS = ("psnr", "ssim", "lpips", "dc", "dc_ratio", "nfe", "seconds", "fd_vgg", "fid")
PER_IMAGE_COLUMNS = ("name", "psnr", "ssim", "lpips", "dc", "dc_ratio", "nfe", "seconds")
# Columns of every trajectory.csv (one row per logged reverse step and image), in this order.
TRAJECTORY_COLUMNS = ("image", "name", "step", "t", "nfe", "dc", "psnr", "lpips")
# Keys of Dirac's chosen.yaml entries that record how the value was chosen (never used as settings).
INFO_KEYS = ("nfe", "selected_by")


def tuning_rule(chosen: Path) -> str:
    """results/<ds>/<task>/<method>/tuning/chosen.yaml -> 'tune_<method>' (the rule that wrote it)."""
    return "tune_" + Path(chosen).parent.parent.name.replace("-", "_")


def check_csv_complete(path: str | Path, rule: str) -> None:
    """Refuse a CSV without a final newline or with a line of the wrong number of fields."""
    path = Path(path)
    text = path.read_text(errors="replace")
    if not text:
        raise UserError(f"{path} is empty; delete it and rerun {rule}")
    if not text.endswith("\n"):
        raise UserError(f"{path} is incomplete (cut mid-line: no final newline); delete it and rerun {rule}")
    rows = csv.reader(text.splitlines())
    header = next(rows)
    for number, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise UserError(f"{path} is incomplete (line {number} has {len(row)} of {len(header)} fields); delete it and rerun {rule}")


def check_aggregate(path: str | Path, metrics: Any) -> None:
    """`metrics`: the `metric` column of an aggregate.csv; exactly one row per AGGREGATE_METRICS."""
    check_csv_complete(path, "the 'metrics' rule")
    names = [str(m) for m in metrics]
    missing = [m for m in AGGREGATE_METRICS if m not in names]
    extra = sorted({m for m in names if m not in AGGREGATE_METRICS})
    repeated = sorted({m for m in names if names.count(m) > 1})
    if missing or extra or repeated:
        what = "; ".join(s for s in (f"missing rows {missing}" if missing else "", f"unknown rows {extra}" if extra else "", f"repeated rows {repeated}" if repeated else "") if s)
        raise UserError(f"{path} does not hold one row per metric ({what}); delete it and rerun the 'metrics' rule")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)


def _grid(chosen: Path, rule: str):
    import pandas as pd

    path = chosen.with_name("grid.csv")
    if not path.is_file():
        raise UserError(f"{chosen} has no grid.csv beside it to check its values against; rerun {rule}")
    check_csv_complete(path, rule)
    grid = pd.read_csv(path)
    if "chosen" not in grid.columns:
        raise UserError(f"{path} lacks its 'chosen' column; rerun {rule}")
    return grid, path


def check_chosen(chosen: str | Path, data: Mapping, key: str | None = None, declared: Mapping | None = None) -> None:
    """Refuse chosen values that are neither the tuning grid's chosen point nor declared fixed.

    `data`: the (sub-)mapping read from chosen.yaml; `key`: its entry (Dirac's 'po'/'do');
    `declared`: the hyper-parameters the config fixes for the method (values there may repeat).
    """
    chosen = Path(chosen)
    rule = tuning_rule(chosen)
    declared = dict(declared or {})
    grid, grid_path = _grid(chosen, rule)
    rows = grid
    columns = {c[len("param_"):]: c for c in grid.columns if c.startswith("param_")}
    if key is not None:
        if "variant" not in grid.columns:
            raise UserError(f"{grid_path} has no 'variant' column for the entry {key!r} of {chosen}; rerun {rule}")
        rows = grid[grid["variant"].astype(str) == key]
        # Dirac: t_stop is a step's t; a search space adds its param_ columns (dirac_tuning).
        columns = {"t_stop": "t", **columns}
    picked = rows[rows["chosen"].astype(str).str.lower() == "true"]
    if len(picked) != 1:
        raise UserError(f"{grid_path} marks {len(picked)} chosen rows{f' for {key!r}' if key else ''} (expected 1); rerun {rule}")
    best = picked.iloc[0]
    where = f"{chosen}{f':{key}' if key else ''}"
    for name, value in data.items():
        if key is not None and name in INFO_KEYS:
            continue
        if name == "t_stop" and key is not None and isinstance(declared.get("t_stop"), (int, float)) and not isinstance(declared.get("t_stop"), bool):
            if _same(value, declared["t_stop"]):
                continue  # declared fixed in the config: the sampler uses exactly this value
            raise UserError(f"{where}: t_stop {value!r} differs from the value the config fixes ({declared['t_stop']!r}); rerun {rule}")
        if name in columns:
            if _same(value, best[columns[name]]):
                continue
            on_grid = any(_same(value, v) for v in rows[columns[name]])
            why = "is not the grid point marked chosen in grid.csv" if on_grid else "is not in the tuning grid (grid.csv)"
            raise UserError(f"{where}: {name} {value!r} {why}; delete it and rerun {rule}")
        if name in declared and _same(value, declared[name]):
            continue
        raise UserError(f"{where}: {name} {value!r} is neither a tuned parameter nor a value the config fixes; delete it and rerun {rule}")
    absent = [n for n in columns if n not in data]
    if absent:
        raise UserError(f"{where} lacks the tuned values {absent}; rerun {rule}")
