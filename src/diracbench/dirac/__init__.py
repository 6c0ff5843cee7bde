"""DiracDiffusion: the incremental-reconstruction loss (`loss`) and the reverse-process sampler
with early stopping, incremental-reconstruction estimators and guidance (`sampler`).

The scheduled degradation family both of them use is `scheduled_family(spec, schedule_csv)`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diracbench.operators import DegradationFamily, family_from_spec, read_schedule_table


def scheduled_family(spec: dict, schedule: str | Path, device: torch.device | str = "cpu") -> DegradationFamily:
    """The operator.json family with the severity rule of schedule.csv (rule `schedule`)."""
    return family_from_spec(spec, severity=read_schedule_table(schedule), device=device)
