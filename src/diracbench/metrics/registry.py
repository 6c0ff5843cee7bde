"""The metric registry: one entry per metric drives scoring, aggregation, Table 1's columns,
tuning objectives and the config schema's objective enums.

A metric's name is its one spelling everywhere: the rows of aggregate.csv, the columns of
per_image.csv and grid.csv, `objective:` / `po_metric:` / `do_metric:` in the config. Adding a
metric is one function plus one entry here. Importing this module imports neither torch nor any
metric backend; `function` names the implementation as "module:attribute", loaded when scored.

Functions receive a `metrics.evaluate.ScoreBatch` (one scoring batch: reconstructions, ground
truth, measurements, operator, settings, and a cache for shared networks) and return
  - per-image metrics: (values (N,) float64 array, protocol note) -- the note goes to aggregate.csv;
  - set-level metrics: ({"x_hat": features, "x": features} or None, note) -- None with the reason
    when it cannot be computed; `distance` then turns all images' features into the value, so a
    split scored in batches or shards gives the value of the whole set.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from diracbench.errors import UserError

LEVELS = ("image", "set")


@dataclass(frozen=True)
class Metric:
    name: str
    level: str  # "image": one value per image (mean and bootstrap CI); "set": one value per set
    higher_is_better: bool | None  # None: no best value (bold) in the table
    digits: int  # decimals in the tables
    title: str  # Markdown/HTML column title
    tex: str  # LaTeX column title
    function: str  # "module:attribute": per-image values, or (set level) features, from a ScoreBatch
    column: bool = True  # a column of Table 1
    objective: bool = False  # may be a tuning objective (tune, Dirac's t_stop choice)
    caption: str = ""  # footnote template under the table ("{note}" = the aggregate's note); "" = none
    na_caption: str = ""  # template for rows whose value is missing (NaN); such cells read "n/a"
    label: str = ""  # plain name in running text (default: the name)
    distance: str = ""  # set level: "module:attribute" giving the value from all images' features

    def compute(self) -> Callable:
        return _load(self.function)

    def distance_fn(self) -> Callable:
        return _load(self.distance)


def _load(ref: str) -> Callable:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_EVAL = "diracbench.metrics.evaluate"

# In per_image.csv / aggregate.csv order. Table 1 shows the `column` metrics in this order.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("psnr", "image", True, 2, "PSNR↑", r"PSNR$\uparrow$", f"{_EVAL}:score_psnr", objective=True),
        Metric("ssim", "image", True, 4, "SSIM↑", r"SSIM$\uparrow$", f"{_EVAL}:score_ssim"),
        Metric("lpips", "image", False, 4, "LPIPS↓", r"LPIPS$\downarrow$", f"{_EVAL}:score_lpips", objective=True),
        Metric("dc", "image", None, 6, "DC", "DC", f"{_EVAL}:score_dc", column=False, caption="DC/σ²: {note}; no best value is marked."),
        Metric("dc_ratio", "image", None, 2, "DC/σ²", r"DC/$\sigma_1^2$", f"{_EVAL}:score_dc_ratio"),
        Metric("nfe", "image", None, 0, "NFE", "NFE", f"{_EVAL}:score_nfe", column=False),
        Metric("seconds", "image", None, 3, "s/img", "s/img", f"{_EVAL}:score_seconds", column=False),
        Metric("fd_vgg", "set", False, 2, "FD-VGG↓", r"FD-VGG$\downarrow$", f"{_EVAL}:features_fd_vgg", objective=True, caption="{note}.", label="FD-VGG", distance=f"{_EVAL}:distance_fd_vgg"),
        Metric("fid", "set", False, 2, "FID↓", r"FID$\downarrow$", f"{_EVAL}:features_fid", caption="FID: {note}.", na_caption="FID n/a: {note}.", label="FID", distance=f"{_EVAL}:distance_fid"),
    )
}
# Table 1's column order (the paper's: distortion, perception, distribution, consistency), and
# the order of the footnotes the metrics' notes make under it.
TABLE_COLUMNS = ("psnr", "ssim", "lpips", "fid", "fd_vgg", "dc_ratio")
FOOTNOTE_ORDER = ("fd_vgg", "fid", "dc")


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; registered metrics: {sorted(METRICS)}")
    return METRICS[name]


def per_image_metrics() -> tuple[str, ...]:
    return tuple(m for m, spec in METRICS.items() if spec.level == "image")


def set_metrics() -> tuple[str, ...]:
    return tuple(m for m, spec in METRICS.items() if spec.level == "set")


def table_columns() -> tuple[Metric, ...]:
    listed = [METRICS[m] for m in TABLE_COLUMNS if METRICS[m].column]
    # A metric registered later appears too, after the paper's columns.
    return tuple(listed + [m for m in METRICS.values() if m.column and m.name not in TABLE_COLUMNS])


def footnote_metrics() -> tuple[Metric, ...]:
    listed = [METRICS[m] for m in FOOTNOTE_ORDER]
    return tuple(listed + [m for m in METRICS.values() if m.caption and m.name not in FOOTNOTE_ORDER])


def objectives() -> tuple[str, ...]:
    """The metrics a tuning may optimise (the schema enums list these plus 'auto')."""
    return tuple(m for m, spec in METRICS.items() if spec.objective)


def auto_objective(task: str) -> str:
    """The task registry's objective (diracbench.tasks): the paper's LPIPS for deblurring, a
    distribution distance (FD-VGG standing in for FID, whose Inception weights may be absent
    offline) for inpainting; an unregistered task is an error, never a silent default."""
    from diracbench.tasks import task_spec

    name = task_spec(task).objective
    if name not in objectives():
        raise UserError(f"task {task!r} registers the objective {name!r}, which is not a tuning objective of the metric registry; use one of {list(objectives())}")
    return name


def resolve_objective(name: str, task: str, key: str = "objective") -> str:
    """`auto` -> the task's default; any other name must be a registered objective, spelled as
    registered (`fd_vgg`, not `fd-vgg`)."""
    if name == "auto":
        return auto_objective(task)
    if name not in objectives():
        hint = f" (spelled {name.replace('-', '_')!r})" if name.replace("-", "_") in objectives() else ""
        raise UserError(f"tuning {key} {name!r} is unknown{hint}; use auto or one of {list(objectives())}")
    return name


def better(name: str) -> str:
    """'max' or 'min' for an objective."""
    hib = metric(name).higher_is_better
    if hib is None:
        raise UserError(f"metric {name!r} has no better direction; it cannot be a tuning objective")
    return "max" if hib else "min"
