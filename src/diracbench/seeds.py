"""`python -m diracbench.seeds`: how much of Table 1 is training-seed noise (the `seeds` target).

The `seeds` target rebuilds the learned methods of a dataset on replicates `<dataset>-seed<N>`:
the same data, measurements, schedules and sampling seeds, only the training seed of the Dirac
models and the DDPM prior differs. This stage reads the metrics of the base run (training seed
`seed`) and of every replicate and writes, under `results/seeds/tables/`:

- `<ds>_table1_seeds.{md,csv,html}`: Table 1's numbers as mean ± spread over the training seeds,
  one column per seed in the CSV. Spread is the sample standard deviation over seeds. Methods
  that train nothing (PnP-ADMM with the shipped DnCNN, ADMM-TV) have spread 0 by construction and
  are not rerun.
- `<ds>_claims_seeds.{md,csv,html}`: the claims table with two more columns: in how many seed
  replicates each claim holds, and whether it holds beyond the spread. A comparison of two means
  holds beyond the spread when its seed-mean gap points the claimed way and exceeds the sum of the
  two spreads; a claim about a path (LPIPS improving, data consistency) must hold in every replicate.

Before any number is read, the replicates' measurements must equal the base's byte for byte,
otherwise the spread would mix measurement noise into training noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from diracbench import cli
from diracbench.claims import COLUMNS as CLAIM_COLUMNS
from diracbench.claims import apply_spread, read_aggregate, task_claims
from diracbench.errors import UserError
from diracbench.textables import to_html, to_markdown

STAT_COLUMNS = ("dataset", "task", "method", "metric", "n_seeds", "mean", "spread", "min", "max")


def split_inputs(items: dict[str, Path]) -> dict[int, dict[str, Path]]:
    """`seed<N>__TASK__KIND[__METHOD]` -> {N: {TASK__KIND[__METHOD]: path}}."""
    out: dict[int, dict[str, Path]] = {}
    for name, path in items.items():
        head, sep, rest = name.partition("__")
        if not sep or not head.startswith("seed") or not head[4:].isdigit():
            raise UserError(f"--input {name}=... must start with the training seed: seed<N>__TASK__KIND[__METHOD]")
        out.setdefault(int(head[4:]), {})[rest] = Path(path)
    return out


def check_same_measurements(per_seed: dict[int, dict[str, Path]], base_seed: int) -> None:
    """Every replicate's `TASK__measurements__SPLIT` array must equal the base run's."""
    base = per_seed[base_seed]
    for seed, inputs in per_seed.items():
        for name, path in inputs.items():
            if "__measurements__" not in name or seed == base_seed:
                continue
            if name not in base:
                raise UserError(f"the base run (seed {base_seed}) lacks the input {name}")
            with np.load(base[name]) as a, np.load(path) as b:
                for key in ("x", "y", "seeds"):
                    if not np.array_equal(a[key], b[key]):
                        raise UserError(
                            f"{path} differs from {base[name]} in {key!r}: the replicate with training seed {seed} did not see the "
                            f"same measurements, so its spread would not be training noise alone; delete the replicate's results folder and rerun `seeds`"
                        )


def seed_statistics(dataset: str, per_seed: dict[int, dict[str, Path]], tasks: Sequence[str], methods: Sequence[str], fixed: Sequence[str]) -> pd.DataFrame:
    """One row per (task, method, metric): mean and sample std over seeds, and each seed's value.

    `fixed` methods train nothing: they are read from the base run only and get spread 0.
    """
    base_seed = min(per_seed)
    rows = []
    for task in tasks:
        for method in list(methods) + list(fixed):
            seeds = sorted(per_seed) if method in methods else [base_seed]
            values: dict[int, dict[str, float]] = {}
            for seed in seeds:
                key = f"{task}__aggregate__{method}"
                if key not in per_seed[seed]:
                    raise UserError(f"no aggregate of {method} on {task} for training seed {seed}; the seeds rule passes one per seed")
                values[seed] = read_aggregate(per_seed[seed][key])
            metrics = [m for m in values[seeds[0]] if all(np.isfinite(values[s].get(m, np.nan)) for s in seeds)]
            for metric in metrics:
                v = np.array([values[s][metric] for s in seeds], dtype=float)
                spread = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                row = {"dataset": dataset, "task": task, "method": method, "metric": metric, "n_seeds": len(v), "mean": float(v.mean()), "spread": spread, "min": float(v.min()), "max": float(v.max())}
                row.update({f"seed_{s}": values[s][metric] for s in seeds})
                rows.append(row)
    df = pd.DataFrame(rows)
    seed_cols = sorted((c for c in df.columns if c.startswith("seed_")), key=lambda c: int(c.split("_")[1]))
    return df[list(STAT_COLUMNS) + seed_cols]


def seeds_claims(dataset: str, per_seed: dict[int, dict[str, Path]], tasks: Sequence[str], sigma_1: float, stats: pd.DataFrame) -> pd.DataFrame:
    """The claims of the base run, with how many replicates each holds in and the spread verdict."""
    base_seed = min(per_seed)
    rows = []
    for task in tasks:
        by_seed = {}
        for seed, inputs in per_seed.items():
            mine = {k.split("__", 1)[1]: v for k, v in inputs.items() if k.startswith(f"{task}__") and "__measurements__" not in k}
            by_seed[seed] = {r["claim"]: r for r in task_claims(task, mine, sigma_1)}
        base_rows = list(by_seed[base_seed].values())
        means = {}
        sel = stats[stats["task"] == task]
        for method, metric, mean in zip(sel["method"], sel["metric"], sel["mean"]):
            means.setdefault(str(method), {})[str(metric)] = float(mean)
        apply_spread(base_rows, task, means, sel)
        for row in base_rows:
            verdicts = [by_seed[s][row["claim"]]["holds"] for s in sorted(by_seed)]
            known = [v for v in verdicts if v != "n/a"]
            row["seeds_holding"] = f"{sum(v == 'true' for v in known)}/{len(known)}" if known else "n/a"
            if row["beyond_spread"] == "" and known:  # a claim about a path: it must hold in every replicate
                row["beyond_spread"] = "true" if all(v == "true" for v in known) else "false"
            rows.append({"dataset": dataset, "task": task, **row})
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS) + ["seeds_holding"])


def _pm(mean: float, spread: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "fd_vgg": 1, "dc_ratio": 2}


def table_cells(stats: pd.DataFrame, tasks: Sequence[str], methods: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    from diracbench.methods.registry import display_name
    from diracbench.tasks import task_title

    shown = [m for m in DIGITS if m in set(stats["metric"])]
    header = ["Method"] + [f"{task_title(t)}: {m}" for t in tasks for m in shown]
    cells = []
    for method in methods:
        row = [display_name(method)]
        for task in tasks:
            for metric in shown:
                sel = stats[(stats["task"] == task) & (stats["method"] == method) & (stats["metric"] == metric)]
                row.append(_pm(float(sel["mean"].iloc[0]), float(sel["spread"].iloc[0]), DIGITS[metric]) if len(sel) else "n/a")
        cells.append(row)
    return header, cells


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.seeds", __doc__.splitlines()[0])
    parser.add_argument("--input", action="append", default=[], metavar="seed<N>__TASK__KIND[__METHOD]=PATH")
    parser.add_argument("--out-stem", required=True, type=Path, help="results/seeds/tables/<dataset>")
    args = parser.parse_args(argv)
    s = args.settings
    for key in ("dataset", "tasks", "methods", "fixed_methods", "sigma_1", "seeds"):
        if key not in s:
            raise UserError(f"seeds settings lack {key!r}")
    per_seed = split_inputs(cli.parse_inputs(args.input))
    if sorted(per_seed) != sorted(s["seeds"]):
        raise UserError(f"inputs cover training seeds {sorted(per_seed)}, the settings name {sorted(s['seeds'])}")
    if len(per_seed) < 2:
        raise UserError("the seeds target needs at least one training seed besides `seed` (config seeds.training)")
    check_same_measurements(per_seed, min(per_seed))
    stats = seed_statistics(s["dataset"], per_seed, s["tasks"], s["methods"], s["fixed_methods"])
    claims = seeds_claims(s["dataset"], per_seed, s["tasks"], float(s["sigma_1"]), stats)

    from diracbench.io import OutputSet

    seeds_text = ", ".join(str(x) for x in sorted(per_seed))
    stem = args.out_stem
    t_title = f"Table 1 on {s['dataset']}, mean ± spread over {len(per_seed)} training seeds ({seeds_text})"
    header, cells = table_cells(stats, s["tasks"], list(s["methods"]) + list(s["fixed_methods"]))
    fixed = ", ".join(s["fixed_methods"]) or "none"
    t_notes = [
        "Spread: the sample standard deviation over training seeds of the test-set mean. Only the training seed of the Dirac models and the DDPM prior changes; data, measurements and sampling seeds are those of the main run (checked byte for byte).",
        f"Methods that train nothing ({fixed}) are not rerun: spread 0 by construction.",
        "Per-seed values: the CSV's seed_<N> columns.",
    ]
    c_title = f"Claims of the paper on {s['dataset']} across {len(per_seed)} training seeds ({seeds_text})"
    c_header = ["Task", "Claim", "Holds (seed {})".format(min(per_seed)), "Seeds holding", "Beyond seed spread", "Numbers (seed {})".format(min(per_seed))]
    c_cells = [[r.task, r.statement, r.holds, r.seeds_holding, r.beyond_spread, r.numbers] for r in claims.itertuples()]
    c_notes = [
        "Beyond seed spread: for a comparison of two means, the seed-mean gap points the claimed way and exceeds the sum of the two spreads; for a claim about a path, it holds in every replicate.",
    ]
    with OutputSet() as out:
        for suffix, title, head, body, notes, frame in (
            ("_table1_seeds", t_title, header, cells, t_notes, stats),
            ("_claims_seeds", c_title, c_header, c_cells, c_notes, claims),
        ):
            name = stem.name + suffix
            out.write_text(stem.with_name(name + ".md"), to_markdown(title, head, body, notes))
            out.write_text(stem.with_name(name + ".html"), to_html(title, head, body, notes))
            frame.to_csv(out.path(stem.with_name(name + ".csv")), index=False)
    print(stats.to_string(index=False), flush=True)
    print(claims.to_string(index=False), flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.seeds")
