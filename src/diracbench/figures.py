"""`python -m diracbench.figures <figure>`: the paper's figures as PNG + PDF.

Figures (each subcommand writes <out-stem>.png and <out-stem>.pdf):
  perception   Fig. 3 — mean PSNR and LPIPS of Dirac's x0_hat vs reverse time t (validation
               trajectory, no guidance) with the PO and DO stopping points marked.
  consistency  Fig. 4 left — data-consistency residual mean (y - A_1(x0_hat))^2 vs t for Dirac
               without guidance, DPS and DDRM, with the noise floor sigma_1^2.
  lpips-nfe    Fig. 4 right — LPIPS vs number of network evaluations for the diffusion methods.
  schedules    Fig. 7 — the degradation schedules (blur std / mask std vs t) per task, each
               labelled by what made it (settings `schedules.<task>`: the task's schedule config).
  samples      sample grid: measurement, each method, ground truth, for the first test images.
  uncertainty  pixel-wise std over several Dirac-PO posterior samples of the same measurement.

Inputs are passed as `--input KIND__METHOD=PATH` (METHOD with '-' written as '_'), e.g.
`--input trajectory__dps=results/photos/deblur/dps/recon/trajectory.csv`; a figure draws what it
is given, so methods that were not run are simply absent.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from diracbench import cli
from diracbench.contracts import TRAJECTORY_COLUMNS, check_csv_complete
from diracbench.errors import UserError
from diracbench.methods.registry import display_name, method_order
from diracbench.tasks import task_title

# "dirac" is not a method but Dirac's unguided validation trajectory (Figs. 3-4); the methods'
# names, order and colours come from the method registry.
DIRAC_TRAJECTORY = "dirac"
METHOD_ORDER = (DIRAC_TRAJECTORY,) + method_order()


# ---------------------------------------------------------------------------------------------
# Inputs


def parse_inputs(items: Sequence[str]) -> dict[str, dict[str, Path]]:
    """`KIND__METHOD=PATH` or `KIND=PATH` -> {kind: {method or '': path}}."""
    out: dict[str, dict[str, Path]] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise UserError(f"--input {item!r}: expected KIND__METHOD=PATH or KIND=PATH")
        kind, _, method = key.partition("__")
        out.setdefault(kind, {})[method.replace("_", "-")] = Path(path)
    return out


def display(method: str) -> str:
    return "Dirac (no guidance)" if method == DIRAC_TRAJECTORY else display_name(method)


def schedule_label(schedule: dict | None) -> str:
    """What made a schedule, from its config (tasks.<task>.schedule): the legend of Fig. 7."""
    if not schedule:
        return "schedule"
    kind = schedule.get("kind")
    if kind == "greedy":
        return f"learned (greedy {str(schedule.get('metric', '')).upper()})"
    if kind == "from_file":
        return f"table ({Path(str(schedule.get('file', ''))).name})"
    return str(kind)


def _ordered(mapping: dict[str, Path]) -> list[tuple[str, Path]]:
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(mapping.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def read_csv(path: Path, columns: Sequence[str], producer: str) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} does not exist; run {producer} first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a readable CSV ({err}); delete it and rerun {producer}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the columns {missing}; it was not written by {producer} — delete it and rerun")
    check_csv_complete(path, producer)
    return df


def read_trajectory(path: Path, method: str) -> pd.DataFrame:
    df = read_csv(path, TRAJECTORY_COLUMNS, f"the '{method}' rule that logs trajectories")
    for col in ("t", "nfe", "dc", "psnr", "lpips"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["method"] = method
    return df


def step_means(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over images of each step (t and nfe are per-step quantities shared by all images)."""
    return df.groupby("step", as_index=False)[["t", "nfe", "dc", "psnr", "lpips"]].mean().sort_values("step")


# ---------------------------------------------------------------------------------------------
# Output


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight"})
    return plt, sns


def save(fig, out_stem: Path) -> list[Path]:
    """PNG and PDF, committed together (a half-written figure is never left behind)."""
    from diracbench.io import OutputSet

    paths = [out_stem.with_name(out_stem.name + ".png"), out_stem.with_name(out_stem.name + ".pdf")]
    with OutputSet() as out:
        fig.savefig(out.path(paths[0]), format="png", dpi=160)
        fig.savefig(out.path(paths[1]), format="pdf")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _palette(methods: Sequence[str]) -> dict[str, tuple]:
    import seaborn as sns

    colours = sns.color_palette("colorblind", len(METHOD_ORDER))
    return {m: colours[METHOD_ORDER.index(m) % len(colours)] if m in METHOD_ORDER else colours[-1] for m in methods}


def _title(settings: dict) -> str:
    task = settings.get("task")
    return f"{settings['dataset']} — {task_title(task)}" if task else str(settings["dataset"])


# ---------------------------------------------------------------------------------------------
# Figures


def fig_perception(inputs: dict, settings: dict, out_stem: Path) -> list[Path]:
    plt, sns = _style()
    traj_path = inputs.get("trajectory", {}).get("dirac")
    if traj_path is None:
        raise UserError("perception: needs --input trajectory__dirac=<dirac/tuning/trajectory.csv>")
    traj = read_trajectory(traj_path, "dirac")
    stops = {}
    chosen_path = inputs.get("chosen", {}).get("dirac")
    if chosen_path is not None:
        from diracbench.io import read_yaml

        chosen = read_yaml(chosen_path, producer="the Dirac tuning rule") or {}
        for key in ("po", "do"):
            try:
                stops[key.upper()] = float(chosen[key]["t_stop"])
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{chosen_path} lacks {key}: {{t_stop: ...}}; rerun the Dirac tuning rule") from None
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8))
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB) ↑"), (axes[1], "lpips", "LPIPS ↓")):
        data = traj.dropna(subset=[metric])
        if data.empty:
            ax.text(0.5, 0.5, f"no {metric.upper()} logged", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=data, x="t", y=metric, ax=ax, errorbar=("ci", 95), n_boot=200, seed=0, color="C0", marker="o", markersize=3)
        ax.set_xlim(1.0, 0.0)  # sampling runs from t = 1 (measurement) to t = 0 (clean)
        ax.set_xlabel("reverse time t (1 = measurement → 0)")
        ax.set_ylabel(label)
        by_time: dict[float, list[str]] = {}
        for name, t_stop in sorted(stops.items()):
            by_time.setdefault(t_stop, []).append(name)  # PO and DO may stop at the same t
        for (t_stop, names), style in zip(sorted(by_time.items()), ("--", ":")):
            ax.axvline(t_stop, color="k", ls=style, lw=1)
            left = t_stop > 0.15  # keep the label inside the axes near t = 0
            ax.text(t_stop, 0.98, f" {' = '.join(names)} t={t_stop:g} ", transform=ax.get_xaxis_transform(), va="top", ha="left" if left else "right", fontsize=7)
    fig.suptitle(f"{_title(settings)}: perception–distortion along the reverse process (val, x0_hat)", fontsize=9)
    fig.tight_layout()
    return save(fig, out_stem)


def fig_consistency(inputs: dict, settings: dict, out_stem: Path) -> list[Path]:
    plt, sns = _style()
    trajs = inputs.get("trajectory", {})
    if not trajs:
        raise UserError("consistency: needs at least one --input trajectory__<method>=PATH")
    sigma2 = _sigma_1(inputs) ** 2
    colours = _palette(list(trajs))
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    empty = []
    for method, path in _ordered(trajs):
        m = step_means(read_trajectory(path, method)).dropna(subset=["dc"])
        label = "Dirac, no guidance (val)" if method == DIRAC_TRAJECTORY else display(method)
        if m.empty:
            empty.append(label)
            continue
        ax.plot(m["t"], m["dc"], label=label, color=colours[method], lw=1.5)
    _note_empty(ax, empty)
    ax.axhline(sigma2, color="k", ls="--", lw=1, label=f"noise floor σ₁² = {sigma2:g}")
    ax.set_yscale("log")
    ax.set_xlim(1.0, 0.0)
    ax.set_xlabel("reverse time t (DPS/DDRM: diffusion step / 1000)")
    ax.set_ylabel("mean (y − A₁(x̂₀))²")
    ax.set_title(f"{_title(settings)}: data consistency", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_stem)


def _note_empty(ax, labels: list[str]) -> None:
    """Say which methods logged no trajectory, rather than silently drawing nothing for them."""
    if labels:
        ax.text(0.02, 0.02, "no trajectory logged: " + ", ".join(labels), transform=ax.transAxes, fontsize=6, color="0.35", va="bottom")


def _sigma_1(inputs: dict) -> float:
    path = next(iter(inputs.get("operator", {}).values()), None)
    if path is None:
        raise UserError("needs --input operator=<operator.json> for the noise floor")
    from diracbench.io import read_json  # operator.json as data: no torch import for a figure

    return float(read_json(path, "the 'measure' rule")["sigma_1"])


def fig_lpips_nfe(inputs: dict, settings: dict, out_stem: Path) -> list[Path]:
    plt, sns = _style()
    trajs, aggs = inputs.get("trajectory", {}), inputs.get("aggregate", {})
    if not trajs and not aggs:
        raise UserError("lpips-nfe: needs --input trajectory__<method>=PATH or aggregate__<method>=PATH")
    colours = _palette(sorted(set(trajs) | set(aggs)))
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    empty = []
    for method, path in _ordered(trajs):
        m = step_means(read_trajectory(path, method)).dropna(subset=["lpips", "nfe"])
        m = m[m["nfe"] > 0]
        if m.empty:
            empty.append(display(method))
            continue
        ax.plot(m["nfe"], m["lpips"], color=colours[method], lw=1.2, alpha=0.8, label=f"{display(method)}: x̂₀ along the run")
    for method, path in _ordered(aggs):
        agg = read_csv(path, ("metric", "mean"), "the 'metrics' rule").set_index("metric")["mean"]
        nfe, lp = float(agg.get("nfe", math.nan)), float(agg.get("lpips", math.nan))
        if np.isfinite(nfe) and np.isfinite(lp) and nfe > 0:
            ax.scatter([nfe], [lp], color=colours[method], edgecolor="k", zorder=5, s=36, label=f"{display(method)}: output (test)")
    _note_empty(ax, empty)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("LPIPS ↓")
    ax.set_title(f"{_title(settings)}: LPIPS vs NFE", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, out_stem)


def fig_schedules(inputs: dict, settings: dict, out_stem: Path) -> list[Path]:
    plt, sns = _style()
    schedules = inputs.get("schedule", {})
    if not schedules:
        raise UserError("schedules: needs at least one --input schedule__<task>=PATH")
    operators = inputs.get("operator", {})
    tasks = sorted(schedules)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 2.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        df = read_csv(schedules[task], ("t", "value"), "the 'schedule' rule").sort_values("t")
        source = settings.get("schedules", {}).get(task)
        ax.plot(df["t"], df["value"], color="C0", lw=1.6, marker="o", markersize=2, label=schedule_label(source))
        label = "severity value"
        if task in operators:
            from diracbench.io import read_json
            from diracbench.operators.registry import operator_kind

            fam = read_json(operators[task], "the 'measure' rule")["family"]
            # The family's own declaration names its parameter and where operator.json keeps it.
            parameter = operator_kind(fam.get("kind"), f"{operators[task]}: family kind").family.severity_parameter
            label = parameter.label
            lin = fam.get(parameter.schedule_key) or {}
            if lin.get("kind") == "linear" and (source or {}).get("kind") != "linear":
                ax.plot([0, 1], [lin["start"], lin["end"]], color="0.5", ls="--", lw=1, label="linear (config end points)")
        ax.set_xlabel("severity t")
        ax.set_ylabel(label)
        ax.set_title(task_title(task), fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{settings['dataset']}: degradation schedules", fontsize=9)
    fig.tight_layout()
    return save(fig, out_stem)


def _read_images(path: Path, key: str, producer: str) -> tuple[np.ndarray, list[str]]:
    from diracbench.io import read_npz

    data = read_npz(path, required=(key, "names"), producer=producer)
    return data[key], [str(n) for n in data["names"]]


def _show(ax, img: np.ndarray) -> None:
    ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def fig_samples(inputs: dict, settings: dict, out_stem: Path) -> list[Path]:
    plt, _ = _style()
    meas_path = next(iter(inputs.get("measurements", {}).values()), None)
    if meas_path is None:
        raise UserError("samples: needs --input measurements=<measurements/test.npz>")
    from diracbench.io import read_npz

    meas = read_npz(meas_path, required=("x", "y", "names"), producer="the 'measure' rule")
    names = [str(n) for n in meas["names"]]
    recons = {m: _read_images(p, "x_hat", f"the '{m}' reconstruction rule") for m, p in _ordered(inputs.get("recon", {}))}
    per_image = {m: read_csv(p, ("name", "psnr", "lpips"), "the 'metrics' rule").set_index("name") for m, p in inputs.get("per_image", {}).items()}
    common = [n for n in names if all(n in r[1] for r in recons.values())]
    chosen = common[: int(settings["grid_images"])]
    if not chosen:
        raise UserError("samples: no test image is reconstructed by every method given")
    cols = ["y"] + list(recons) + ["x"]
    fig, axes = plt.subplots(len(chosen), len(cols), figsize=(1.25 * len(cols), 1.45 * len(chosen) + 0.3), squeeze=False)
    for r, name in enumerate(chosen):
        i = names.index(name)
        for c, col in enumerate(cols):
            ax = axes[r, c]
            if col == "y":
                _show(ax, meas["y"][i])
            elif col == "x":
                _show(ax, meas["x"][i])
            else:
                _show(ax, recons[col][0][recons[col][1].index(name)])
                if col in per_image and name in per_image[col].index:
                    row = per_image[col].loc[name]
                    ax.set_xlabel(f"{row['psnr']:.1f} dB / {row['lpips']:.3f}", fontsize=6, labelpad=1)
            if r == 0:
                ax.set_title({"y": "measurement y", "x": "ground truth"}.get(col, display(col)), fontsize=7)
    fig.suptitle(f"{_title(settings)}: test samples (labels: PSNR / LPIPS)", fontsize=8)
    fig.tight_layout(pad=0.3, h_pad=0.9, rect=(0, 0, 1, 0.97))
    return save(fig, out_stem)


def fig_uncertainty(inputs: dict, settings: dict, out_stem: Path) -> list[Path]:
    plt, _ = _style()
    meas_path = next(iter(inputs.get("measurements", {}).values()), None)
    samples_path = next(iter(inputs.get("samples", {}).values()), None)
    if meas_path is None or samples_path is None:
        raise UserError("uncertainty: needs --input measurements=PATH and --input samples=<dirac-po/recon/posterior_samples.npz>")
    from diracbench.io import read_npz

    meas = read_npz(meas_path, required=("x", "y", "names"), producer="the 'measure' rule")
    names = [str(n) for n in meas["names"]]
    samples, s_names = _read_images(samples_path, "samples", "the 'dirac-po' reconstruction rule")
    if samples.ndim != 5 or samples.shape[0] != len(s_names) or samples.shape[2:] != meas["x"].shape[1:]:
        raise UserError(f"{samples_path}: 'samples' has shape {samples.shape}; expected S x K x {meas['x'].shape[1:]} with one name per S — rerun the dirac-po rule")
    if samples.shape[1] < 2:
        raise UserError(f"{samples_path}: a pixel-wise std needs at least 2 samples per image (got {samples.shape[1]})")
    unknown = [n for n in s_names if n not in names]
    if unknown:
        raise UserError(f"{samples_path}: names {unknown[:3]} are not in the test measurements; rerun the dirac-po rule")
    rows = min(len(s_names), int(settings["uncertainty_images"]))
    clipped = np.clip(samples[:rows], 0, 1)
    std = clipped.std(axis=1, ddof=1).mean(axis=1)  # (rows, H, W): per-pixel std, averaged over colour
    mean = clipped.mean(axis=1)
    err = np.abs(mean - meas["x"][[names.index(n) for n in s_names[:rows]]]).mean(axis=1)
    vmax = float(max(std.max(), err.max(), 1e-6))
    titles = ["measurement y", "ground truth", "posterior mean", "one sample", "pixel-wise std", "|mean − truth|"]
    fig, axes = plt.subplots(rows, 6, figsize=(7.5, 1.35 * rows + 0.4), squeeze=False)
    for r in range(rows):
        i = names.index(s_names[r])
        _show(axes[r, 0], meas["y"][i])
        _show(axes[r, 1], meas["x"][i])
        _show(axes[r, 2], mean[r])
        _show(axes[r, 3], clipped[r, 0])
        for c, data in ((4, std[r]), (5, err[r])):
            im = axes[r, c].imshow(data, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            axes[r, c].grid(False)
        if r == 0:
            for c, t in enumerate(titles):
                axes[0, c].set_title(t, fontsize=7)
    fig.colorbar(im, ax=axes[:, 4:].ravel().tolist(), shrink=0.8, label="per-pixel value")
    fig.suptitle(f"{_title(settings)}: Dirac-PO uncertainty ({samples.shape[1]} posterior samples per measurement)", fontsize=8)
    return save(fig, out_stem)


FIGURES = {
    "perception": fig_perception,
    "consistency": fig_consistency,
    "lpips-nfe": fig_lpips_nfe,
    "schedules": fig_schedules,
    "samples": fig_samples,
    "uncertainty": fig_uncertainty,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.figures", __doc__.splitlines()[0])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("figure", choices=sorted(FIGURES))
    parser.add_argument("--input", action="append", default=[], help="KIND__METHOD=PATH or KIND=PATH (repeatable)")
    parser.add_argument("--out-stem", required=True, type=Path, help="results/figures/<name> (writes .png and .pdf)")
    args = parser.parse_args(argv)
    if "dataset" not in args.settings:
        raise UserError("--settings lacks 'dataset'")
    from diracbench.provenance import write_provenance
    from diracbench.runtime import configure_threads

    configure_threads(args.threads)
    start = time.perf_counter()
    inputs = parse_inputs(args.input)
    paths = FIGURES[args.figure](inputs, args.settings, args.out_stem)
    for p in paths:
        print(f"wrote {p}", flush=True)
    write_provenance(
        paths[0], f"figures:{args.figure}", args.settings, seeds=args.settings.get("seed"),
        extra={"inputs": {k: {m: str(p) for m, p in v.items()} for k, v in inputs.items()}, "files": [str(p) for p in paths],
               "seconds": time.perf_counter() - start},
    )


if __name__ == "__main__":
    cli.run(main, stage="diracbench.figures")
