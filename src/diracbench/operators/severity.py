"""Severity schedules: how a degradation parameter (blur std, mask std, ...) moves with t in [0, 1].

Every schedule maps a tensor of severities t to parameter values, elementwise, so a batch can
carry one severity per image. Tables are interpolated piecewise-linearly, which is what the
official `from_file` lookup does (first row with t_row >= t, interpolated with the previous row).

Each family class declares its one severity parameter (`SeverityParameter`: name, label, the
operator.json keys), so the schedule tool, the end-point check of a learned schedule and plots
treat every family alike; `Severity` binds that declaration to the schedule a family instance uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from diracbench.errors import UserError


class SeveritySchedule(Protocol):
    def __call__(self, t: torch.Tensor) -> torch.Tensor: ...

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class LinearSchedule:
    start: float
    end: float

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.start + (self.end - self.start) * t.clamp(0.0, 1.0)

    def to_dict(self) -> dict:
        return {"kind": "linear", "start": self.start, "end": self.end}


@dataclass(frozen=True)
class TableSchedule:
    """Piecewise-linear interpolation of (t, value) rows; t must rise from 0 to 1."""

    t: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        t = np.asarray(self.t, dtype=np.float64)
        v = np.asarray(self.values, dtype=np.float64)
        if t.ndim != 1 or t.shape != v.shape or t.size < 2:
            raise UserError("a schedule table needs at least two rows of (t, value)")
        if abs(t[0]) > 1e-9 or abs(t[-1] - 1.0) > 1e-9:
            raise UserError(f"a schedule table must start at t=0 and end at t=1 (got {t[0]} .. {t[-1]})")
        if np.any(np.diff(t) <= 0):
            raise UserError("schedule table t values must be strictly increasing")
        if not np.all(np.isfinite(v)):
            raise UserError("schedule table values must be finite")

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
        ts, vs = _table_tensors(self.t, self.values, t.device)
        hi = torch.searchsorted(ts, t.contiguous(), right=False).clamp(1, len(ts) - 1)
        lo = hi - 1
        w = (t - ts[lo]) / (ts[hi] - ts[lo])
        return vs[lo] + w * (vs[hi] - vs[lo])

    def to_dict(self) -> dict:
        return {"kind": "table", "t": list(self.t), "values": list(self.values)}

    @classmethod
    def from_rows(cls, t: Sequence[float], values: Sequence[float]) -> "TableSchedule":
        return cls(tuple(float(a) for a in t), tuple(float(b) for b in values))


@lru_cache(maxsize=32)
def _table_tensors(t: tuple[float, ...], values: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A table's rows as tensors, copied to each device once (not on every lookup)."""
    with torch.inference_mode(False):  # cached: must stay usable outside inference mode too
        return torch.tensor(t, dtype=torch.float64, device=device), torch.tensor(values, dtype=torch.float64, device=device)


def read_schedule_table(path: str | Path) -> TableSchedule:
    """Read a two-column `t value` table: whitespace text (official format) or CSV with header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"schedule file {path} does not exist; point the config's schedule 'file' at a two-column (t, value) table")
    text = path.read_text()
    rows: list[tuple[float, float]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            a, b = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            if lineno == 1:  # a CSV header row
                continue
            raise UserError(f"{path}:{lineno}: expected two numbers (t, value), got {line!r}") from None
        rows.append((a, b))
    if len(rows) < 2:
        raise UserError(f"{path}: a schedule table needs at least two rows")
    t, v = zip(*rows)
    try:
        return TableSchedule.from_rows(t, v)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def schedule_from_dict(spec: dict) -> SeveritySchedule:
    kind = spec.get("kind")
    if kind == "linear":
        return LinearSchedule(float(spec["start"]), float(spec["end"]))
    if kind == "table":
        return TableSchedule.from_rows(spec["t"], spec["values"])
    raise UserError(f"unknown severity schedule kind {kind!r}; use 'linear' or 'table'")


@dataclass(frozen=True)
class SeverityParameter:
    """The degradation parameter a family's severity t moves; declared once per family class."""

    name: str  # the family's constructor argument and attribute holding the schedule
    label: str  # axis label and message text, with units: "blur std (px)"
    schedule_key: str  # operator.json family key of the schedule
    end_key: str  # operator.json family key of the value at t = 1 (what the measurements used)

    def schedule_in(self, family: dict) -> SeveritySchedule:
        """The schedule stored in an operator.json family dict."""
        return schedule_from_dict(family[self.schedule_key])


@dataclass(frozen=True)
class Severity:
    """A family's severity parameter together with the schedule it follows."""

    parameter: SeverityParameter
    schedule: SeveritySchedule

    @property
    def name(self) -> str:
        return self.parameter.name

    @property
    def label(self) -> str:
        return self.parameter.label

    @property
    def keys(self) -> tuple[str, str]:
        """(schedule key, value-at-t=1 key) of operator.json's family dict."""
        return self.parameter.schedule_key, self.parameter.end_key

    def __call__(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.schedule(torch.as_tensor(t, dtype=torch.float64))

    @property
    def start(self) -> float:
        """The schedule's value at t = 0 (a family may still act as the identity there)."""
        return float(self.schedule(torch.tensor(0.0)))

    @property
    def end(self) -> float:
        return float(self.schedule(torch.tensor(1.0)))
