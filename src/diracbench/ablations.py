"""The paper's ablations (Figs. 8-9) on the val split: `python -m diracbench.ablations <stage>`.

- Fig. 8 (guidance step size): the guidance sweep itself is Dirac's tuning search
  (`python -m diracbench.tune --method dirac-po` with a search space over the guidance schemes and
  ζ, rule `ablation_guidance`); `figure-guidance` draws, per scheme, the best mean val LPIPS of
  x0_hat along the reverse path (what PO tuning would reach) against ζ, with no guidance as a line.
- Fig. 9 (loss look-ahead Δt): `lookahead` samples val once per trained Δt model with the
  default's tuned sampler settings (its chosen.yaml; only the model changes) and scores PSNR,
  LPIPS and FD-VGG for PO and DO, keeping PO's reconstructions of the first val images;
  `figure-lookahead` draws the three metrics against Δt beside those reconstructions. A t_stop
  tuned for one model is not the best for another (a Δt = 0 deblurring model is worst at t = 1),
  so the figure also draws each model's own best point along the path (`path_bests` of the
  tuning search over model_dt, rule `ablation_lookahead_path`) on the panels its metric belongs to.

Models of a Δt the default already trains are reused, not retrained; so is its tuning.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from diracbench import cli
from diracbench.errors import UserError
from diracbench.metrics.registry import better

VARIANTS = ("po", "do")
INFO_KEYS = ("nfe", "selected_by")


def _dt_name(dt: float) -> str:
    return f"{float(dt):g}"


def lookahead_hparams(variant_cfg: dict, chosen_entry: dict, model_dt: float, run: dict) -> dict:
    """The default's tuned settings of one variant with another model (only model_dt changes)."""
    hp = {**variant_cfg, **{k: v for k, v in chosen_entry.items() if k not in INFO_KEYS}}
    return {**hp, "model_dt": float(model_dt), **run}


def lookahead_scores(problem, recorder, settings: dict, chosen: dict, ctx) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per Δt and variant (psnr, lpips, fd_vgg, nfe) against the clean images of
    `recorder` (the problem's); PO's first images per Δt."""
    import torch

    from diracbench.methods import dirac
    from diracbench.metrics.perceptual import frechet_distance

    lp = settings["lpips"]
    feats = recorder.vgg_features(int(lp["upsample_below"]))
    everyone = np.arange(len(recorder))
    x = recorder.x.clamp(0, 1)
    ref = recorder.reference_features(int(lp["upsample_below"]), everyone)
    run = {"batch_size": int(settings["batch_size"]), "lpips_every": 0, "lpips": lp, "posterior_images": 0, "posterior_samples": 0, "posterior_t_stop": None}
    n_show = min(int(settings["images"]), len(problem))
    rows, samples = [], {"x": x[:n_show].cpu().numpy(), "y": problem.y[:n_show].clamp(0, 1).cpu().numpy(), "names": np.array(problem.names[:n_show])}
    for dt in settings["look_aheads"]:
        for v in VARIANTS:
            hp = lookahead_hparams(settings["variants"][v], chosen[v], dt, run)
            tic = time.perf_counter()
            rec = dirac.reconstruct(problem, {**hp, "variant": v}, ctx, extras=False)
            out = torch.from_numpy(rec.x_hat).to(x.device)
            mse = (out - x).pow(2).flatten(1).mean(1).clamp_min(1e-12)
            rows.append({
                "look_ahead": float(dt), "variant": v, "t_stop": float(hp["t_stop"]), "nfe": float(rec.nfe.mean()),
                "psnr": float((10 * torch.log10(1.0 / mse)).mean()), "lpips": float(recorder.lpips_to_clean(lp, out, everyone).mean()),
                "fd_vgg": float(frechet_distance(feats(out.cpu()).numpy(), ref)), "n_images": len(problem),
            })
            print(f"look-ahead {_dt_name(dt)} {v}: {rows[-1]} in {time.perf_counter() - tic:.1f}s", flush=True)
            if v == "po":
                samples[f"dt{_dt_name(dt)}"] = rec.x_hat[:n_show]
    return pd.DataFrame(rows), samples


def _read_chosen(path: Path, variants: dict) -> dict:
    from diracbench.contracts import check_chosen
    from diracbench.io import read_yaml

    data = read_yaml(path, producer="the Dirac tuning rule") or {}
    for v in VARIANTS:
        if v not in data:
            raise UserError(f"{path} lacks the {v} entry; rerun tune_dirac")
        check_chosen(path, data[v], v, {**variants[v], "variant": v})
    return data


# ---------------------------------------------------------------------------------------------
# Figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "font.size": 8})
    return plt


def _save(fig, stem: Path) -> None:
    from diracbench.io import OutputSet

    with OutputSet() as out:
        fig.savefig(out.path(stem.with_name(stem.name + ".png")), format="png", dpi=160)
        fig.savefig(out.path(stem.with_name(stem.name + ".pdf")), format="pdf")


def guidance_curves(grid: pd.DataFrame, variant: str = "po") -> pd.DataFrame:
    """Per guidance scheme and ζ: the best mean val LPIPS of x0_hat along the path."""
    need = ["variant", "param_guidance", "param_zeta", "lpips"]
    missing = [c for c in need if c not in grid.columns]
    if missing:
        raise UserError(f"the guidance sweep's grid.csv lacks {missing}; rerun ablation_guidance")
    g = grid[grid["variant"] == variant].dropna(subset=["lpips"])
    return g.groupby(["param_guidance", "param_zeta"], as_index=False)["lpips"].min().rename(columns={"param_guidance": "guidance", "param_zeta": "zeta"})


# Fig. 9's second protocol: which metric each variant's own t_stop optimises (as in tuning).
PATH_METRICS = {"po": "lpips", "do": "psnr"}


def path_bests(grid: pd.DataFrame) -> pd.DataFrame:
    """Per Δt model and variant: the best mean val score of x0_hat along the reverse path and its t
    (PO: lowest LPIPS, DO: highest PSNR; ties go to the earliest step, the fewest NFEs)."""
    need = ["variant", "param_model_dt", "t", "nfe", "psnr", "lpips"]
    missing = [c for c in need if c not in grid.columns]
    if missing:
        raise UserError(f"the look-ahead path search's grid.csv lacks {missing}; rerun ablation_lookahead_path")
    rows = []
    for (v, dt), g in grid.groupby(["variant", "param_model_dt"], sort=True):
        if v not in PATH_METRICS:
            continue
        metric = PATH_METRICS[v]
        g = g.dropna(subset=[metric]).sort_values("nfe", kind="stable")
        if g.empty:
            raise UserError(f"no {metric} for {v}, Δt = {_dt_name(dt)} in the path search's grid.csv; rerun ablation_lookahead_path")
        best = g.loc[g[metric].idxmax() if better(metric) == "max" else g[metric].idxmin()]
        rows.append({"look_ahead": float(dt), "variant": v, "metric": metric, "value": float(best[metric]), "t_stop": float(best["t"]), "nfe": int(best["nfe"])})
    return pd.DataFrame(rows, columns=["look_ahead", "variant", "metric", "value", "t_stop", "nfe"])


def figure_guidance(grid_path: Path, title: str, stem: Path) -> None:
    from diracbench.contracts import check_csv_complete

    check_csv_complete(grid_path, "ablation_guidance")
    curves = guidance_curves(pd.read_csv(grid_path))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    for scheme, label, marker in (("std", "std-scaled", "o"), ("error", "error-scaled", "s")):
        c = curves[curves["guidance"] == scheme].sort_values("zeta")
        if not c.empty:
            ax.plot(c["zeta"], c["lpips"], marker=marker, label=label)
    none = curves[curves["guidance"] == "none"]
    if not none.empty:
        ax.axhline(float(none["lpips"].iloc[0]), color="k", ls="--", lw=1, label="no guidance")
    ax.set_xscale("log")
    ax.set_xlabel("guidance step size ζ")
    ax.set_ylabel("mean val LPIPS ↓ (best t along the path)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    _save(fig, stem)


def figure_lookahead(scores_path: Path, samples_path: Path, title: str, stem: Path, path_grid: Path | None = None) -> None:
    from diracbench.contracts import check_csv_complete
    from diracbench.io import read_npz

    check_csv_complete(scores_path, "ablation_lookahead")
    scores = pd.read_csv(scores_path)
    bests = None
    if path_grid is not None:
        check_csv_complete(path_grid, "ablation_lookahead_path")
        bests = path_bests(pd.read_csv(path_grid))
    samples = read_npz(samples_path, required=("x", "y", "names"), producer="the ablation_lookahead rule")
    dts = sorted(scores["look_ahead"].unique())
    n_img = len(samples["names"])
    plt = _plt()
    fig = plt.figure(figsize=(8.4, 2.4 + 1.2 * n_img))
    outer = fig.add_gridspec(2, 1, height_ratios=[2.0, 1.0 * max(n_img, 1)], hspace=0.5)
    top = outer[0].subgridspec(1, 3, wspace=0.45)
    for i, (metric, label) in enumerate((("lpips", "LPIPS ↓"), ("fd_vgg", "FD-VGG ↓"), ("psnr", "PSNR (dB) ↑"))):
        ax = fig.add_subplot(top[0, i])
        for v, marker in (("po", "o"), ("do", "s")):
            s = scores[scores["variant"] == v].sort_values("look_ahead")
            line = ax.plot(s["look_ahead"], s[metric], marker=marker, label=f"Dirac-{v.upper()}")[0]
            own = bests[(bests["variant"] == v) & (bests["metric"] == metric)].sort_values("look_ahead") if bests is not None else None
            if own is not None and not own.empty:
                ax.plot(own["look_ahead"], own["value"], ls="--", marker=marker, mfc="none", color=line.get_color(), label=f"Dirac-{v.upper()}, own t_stop")
        ax.set_xlabel("loss look-ahead Δt")
        ax.set_ylabel(label)
        if i != 1:  # FD-VGG has no own-t_stop line: its legend would repeat the first one
            ax.legend(fontsize=6)
    cols = ["y"] + [f"dt{_dt_name(d)}" for d in dts] + ["x"]
    heads = ["measurement y"] + [f"PO, Δt = {_dt_name(d)}" for d in dts] + ["ground truth"]
    sub = outer[1].subgridspec(n_img, len(cols), wspace=0.05, hspace=0.1)
    for r in range(n_img):
        for c, (key, head) in enumerate(zip(cols, heads)):
            ax = fig.add_subplot(sub[r, c])
            if key in samples:
                ax.imshow(np.clip(np.transpose(samples[key][r], (1, 2, 0)), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(head, fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, stem)


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diracbench.ablations", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    la = sub.add_parser("lookahead", help="score each Δt model on val with the default's tuned settings")
    for p in (la,):
        p.add_argument("--settings", type=cli.parse_settings, required=True)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--device", default="auto")
    la.add_argument("--operator", required=True, type=Path)
    la.add_argument("--measurements", required=True, type=Path)
    la.add_argument("--chosen", required=True, type=Path, help="the default's dirac/tuning/chosen.yaml")
    la.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    la.add_argument("--out-scores", required=True, type=Path)
    la.add_argument("--out-samples", required=True, type=Path)
    fg = sub.add_parser("figure-guidance", help="Fig. 8 from the guidance sweep's grid.csv")
    fg.add_argument("--grid", required=True, type=Path)
    fl = sub.add_parser("figure-lookahead", help="Fig. 9 from the look-ahead scores and samples")
    fl.add_argument("--scores", required=True, type=Path)
    fl.add_argument("--samples", required=True, type=Path)
    fl.add_argument("--path-grid", type=Path, default=None, help="ablation_lookahead_path's grid.csv (each model's own t_stop)")
    for p in (fg, fl):
        p.add_argument("--title", default="")
        p.add_argument("--out-stem", required=True, type=Path)
        p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.stage == "figure-guidance":
        figure_guidance(args.grid, args.title, args.out_stem)
        return
    if args.stage == "figure-lookahead":
        figure_lookahead(args.scores, args.samples, args.title, args.out_stem, args.path_grid)
        return
    from diracbench.io import OutputSet
    from diracbench.methods.base import RunContext, load_problem_and_recorder
    from diracbench.runtime import configure_threads, resolve_device
    from diracbench.cli import parse_inputs

    configure_threads(args.threads)
    device = resolve_device(args.device)
    s = args.settings
    for key in ("variants", "look_aheads", "lpips", "batch_size", "images", "seed"):
        if key not in s:
            raise UserError(f"ablations lookahead settings lack {key!r}")
    chosen = _read_chosen(args.chosen, s["variants"])
    problem, recorder = load_problem_and_recorder(args.operator, args.measurements, "val", device, s.get("max_images"))
    # No recorder in the context: the runs are scored on their outputs, not along their paths.
    ctx = RunContext(device=device, threads=args.threads, seed=int(s["seed"]), inputs=parse_inputs(args.input))
    scores, samples = lookahead_scores(problem, recorder, s, chosen, ctx)
    with OutputSet() as out:
        scores.to_csv(out.path(args.out_scores), index=False)
        with open(out.path(args.out_samples), "wb") as fh:  # a file object: np.savez adds no suffix
            np.savez(fh, **samples)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.ablations")
