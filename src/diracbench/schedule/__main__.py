"""`python -m diracbench.schedule`: the severity schedule of one task (paper Algorithm 2 / Fig. 7).

Kinds (`--settings` key `schedule.kind`):
- `greedy`: candidates on linspace(value(0), value(1), grid_size) of the family's declared severity
  parameter (blur std, mask std, SR strength); distance = mean over `n_images` seeded training
  images of LPIPS / MSE / RMSE between the noiseless degradations; `budget` interior points chosen
  greedily and placed at t = k / (budget + 1).
- `from_file`: a two-column (t, value) table, e.g. the official blur schedule; it must start and
  end at the operator's configured values.
- `linear`: the two-row table (0, value(0)), (1, value(1)).

Outputs in `--out-dir`: `schedule.csv` (columns t, value; interpolate linearly between rows),
`iterations.csv` (greedy: the max distance after each insertion; empty otherwise),
`schedule.png` / `schedule.pdf` (severity vs t, and for greedy the max distance per iteration).

Example:
    python -m diracbench.schedule --settings '{"schedule": {"kind": "greedy", "metric": "mse",
        "grid_size": 100, "budget": 15, "n_images": 8}, "seed": 0, "lpips": null}' \
        --train results/photos/data/train.npy --operator results/photos/deblur/operator.json \
        --out-dir results/photos/deblur/schedule
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from diracbench import cli
from diracbench.data import load_split, to_unit_float
from diracbench.errors import UserError
from diracbench.io import OutputSet
from diracbench.operators import LinearSchedule, Severity, family_from_spec, load_operator_spec, operator_kind, read_schedule_table
from diracbench.provenance import write_provenance
from diracbench.runtime import configure_threads, device_description, resolve_device
from diracbench.schedule.distances import FeatureDistance, make_embedding
from diracbench.schedule.greedy import greedy_schedule, schedule_rows
from diracbench.seeding import seed_from_string

ITERATION_COLUMNS = ["iteration", "max_distance", "split_lo", "split_hi", "inserted", "inserted_value", "d_left", "d_right"]
# Values read from a file must match the operator's end points to this relative tolerance.
END_POINT_RTOL = 1e-5


def parameter_range(spec: dict) -> tuple[str, float, float]:
    """(parameter label, value at t=0, value at t=1) of the operator.json family's declared severity."""
    fam = spec["family"]
    param = operator_kind(fam["kind"], "operator.json family kind").family.severity_parameter
    severity = Severity(param, param.schedule_in(fam))
    return severity.label, severity.start, severity.end


def pick_images(train: np.ndarray, n: int, seed: int, task: str) -> torch.Tensor:
    if n > len(train):
        raise UserError(f"schedule n_images {n} exceeds the {len(train)} training images; lower tasks.{task}.schedule.n_images")
    rng = np.random.default_rng(seed_from_string("schedule", seed, task) % (2**32))
    idx = np.sort(rng.choice(len(train), size=n, replace=False))
    return torch.from_numpy(to_unit_float(train[idx]))


def run_greedy(cfg: dict, spec: dict, images: torch.Tensor, lpips: dict | None, device: torch.device) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    _, lo, hi = parameter_range(spec)
    grid = np.linspace(lo, hi, int(cfg["grid_size"]))
    # Candidate i is the linear family's severity i / (G - 1): exactly grid[i], and the identity
    # at i = 0 for the mask (as the operator itself behaves at t = 0).
    family = family_from_spec(spec, severity=LinearSchedule(lo, hi), device=device)
    x = images.to(device)
    n = len(x)
    t_of = torch.linspace(0.0, 1.0, len(grid), dtype=torch.float64)

    def degrade(idx: np.ndarray) -> torch.Tensor:
        t = t_of[torch.as_tensor(idx)].repeat_interleave(n)
        return family.apply(x.repeat(len(idx), 1, 1, 1), t).reshape(len(idx), n, *x.shape[1:])

    embed, root = make_embedding(cfg["metric"], lpips, device)
    distance = FeatureDistance(degrade, embed, n, root=root)
    start = time.perf_counter()
    distance.precompute(len(grid))
    result = greedy_schedule(len(grid), int(cfg["budget"]), distance)
    print(f"greedy schedule: {cfg['budget']} points from {len(grid)} candidates, {distance.embedded} candidate embeddings, {time.perf_counter() - start:.1f}s; max distance {result.max_distance[0]:.4g} -> {result.max_distance[-1]:.4g}", flush=True)
    iters = pd.DataFrame(result.iterations)
    iters["inserted_value"] = [grid[j] if j >= 0 else np.nan for j in iters["inserted"]]
    t, values = schedule_rows(grid[result.indices])
    return t, values, iters[ITERATION_COLUMNS]


def run_from_file(path: Path, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    table = read_schedule_table(path)
    t, values = np.asarray(table.t), np.asarray(table.values)
    label, lo, hi = parameter_range(spec)
    for got, want, where in ((values[0], lo, "t = 0"), (values[-1], hi, "t = 1")):
        if abs(got - want) > END_POINT_RTOL * max(1.0, abs(want)):
            raise UserError(f"{path}: the {label} at {where} is {got:.6g} but the operator uses {want:.6g}; use a table made for this operator or change the operator's end points")
    if np.any(np.diff(values) < 0):
        raise UserError(f"{path}: the {label} must not decrease with t (a more severe degradation at every later t)")
    return t, values


def plot(path_png: Path, path_pdf: Path, t: np.ndarray, values: np.ndarray, iters: pd.DataFrame, label: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    greedy = len(iters) > 0
    fig, axes = plt.subplots(1, 2 if greedy else 1, figsize=(8.0 if greedy else 4.2, 3.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot([0, 1], [values[0], values[-1]], ls="--", lw=1, color="0.6", label="linear")
    ax.plot(t, values, marker="o" if len(t) <= 40 else None, ms=3, lw=1.5, label="schedule")
    ax.set_xlabel("severity t")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.legend(frameon=False)
    if greedy:
        ax2 = axes[0, 1]
        ax2.plot(iters["iteration"], iters["max_distance"], marker=".", lw=1)
        ax2.set_xlabel("greedy iteration")
        ax2.set_ylabel("max distance between neighbours")
        ax2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path_png, dpi=150)
    fig.savefig(path_pdf)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.schedule", __doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="results/<dataset>/data/train.npy (greedy)")
    parser.add_argument("--operator", type=Path, required=True, help="results/<dataset>/<task>/operator.json")
    parser.add_argument("--file", type=Path, default=None, help="the (t, value) table for kind from_file")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    s = args.settings
    for key in ("schedule", "seed", "lpips"):
        if key not in s:
            raise UserError(f"--settings lacks {key!r}")
    cfg = s["schedule"]
    spec = load_operator_spec(args.operator)
    task = spec["task"]
    label, lo, hi = parameter_range(spec)
    iters = pd.DataFrame(columns=ITERATION_COLUMNS)
    kind = cfg["kind"]
    start = time.perf_counter()
    if kind == "greedy":
        images = pick_images(load_split(args.train), int(cfg["n_images"]), int(s["seed"]), task)
        t, values, iters = run_greedy(cfg, spec, images, s["lpips"], device)
    elif kind == "from_file":
        if args.file is None:
            raise UserError(f"tasks.{task}.schedule.kind is from_file, so the rule must pass --file")
        t, values = run_from_file(args.file, spec)
    elif kind == "linear":
        t, values = np.array([0.0, 1.0]), np.array([lo, hi])
    else:
        raise UserError(f"tasks.{task}.schedule.kind {kind!r} is unknown; use greedy, from_file or linear")
    out_dir = args.out_dir
    with OutputSet() as out:
        pd.DataFrame({"t": t, "value": values}).to_csv(out.path(out_dir / "schedule.csv"), index=False, float_format="%.10g")
        iters.to_csv(out.path(out_dir / "iterations.csv"), index=False)
        plot(out.path(out_dir / "schedule.png"), out.path(out_dir / "schedule.pdf"), t, values, iters, label, f"{task}: {kind}" + (f" ({cfg['metric']})" if kind == "greedy" else ""))
    write_provenance(out_dir / "schedule.csv", "schedule", s, device=device_description(device), seeds=s["seed"], extra={"seconds": time.perf_counter() - start, "rows": len(t)})
    print(f"{task} schedule ({kind}): {len(t)} rows, {label} {values[0]:.4g} -> {values[-1]:.4g}, value at t=0.5: {np.interp(0.5, t, values):.4g}", flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.schedule")
