"""Dirac-PO and Dirac-DO: the Dirac reverse process, stopped early at a t chosen on val.

`reconstruct` samples a measurement set with one variant's settings (the hparams the sample CLI
merges from config and `chosen.yaml:<variant>`), logging per step and image the t, NFE,
data-consistency residual mean((y - A_1(x0_hat))^2), PSNR and (every `lpips_every` steps, batched
after sampling) LPIPS of x0_hat; optionally K seeded posterior samples of the first S images
(for the uncertainty map; stopped at `posterior_t_stop`, or at the variant's t_stop when that is
null), returned as the `posterior_samples` extra output.

`tune` runs the whole reverse process (t_stop = 0) on the val split once per distinct model and
sampler setting and picks t_stop per variant: DO at the peak of the mean PSNR of x0_hat, PO at
the best perceptual score (LPIPS for deblurring, FD-VGG for inpainting by default; FD-VGG, a
Fréchet distance of VGG16 features, stands in for FID, whose Inception weights may be absent).
A variant whose config gives a number for t_stop keeps it (e.g. to reproduce the paper's values).
With a search space in the config (`dirac.tasks.<task>.search`), the same runs also choose the
guidance scheme and zeta, the output, dt and the model's look-ahead (methods/dirac_tuning.py).

Inputs (RunContext): `model-dt<dt>` (weights of the model trained with look-ahead dt, e.g.
`model-dt1`) and `schedule` (schedule.csv of the task).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from diracbench.dirac import scheduled_family
from diracbench.dirac.sampler import SamplerSettings, dirac_sample
from diracbench.errors import UserError
from diracbench.metrics.image_quality import data_consistency, psnr
from diracbench.methods.base import TRAJECTORY_COLUMNS, Problem, Reconstruction, RunContext, TuningResult
from diracbench.nn.models import load_model
from diracbench.operators import GeometricNoise
from diracbench.seeding import image_generators, seed_from_string

# Registry entries (read as literals by diracbench.methods.registry, without importing this
# module). Both variants share the config section `dirac:` (required when either is configured),
# one tuning job and the trained models, so they run under their own rules (workflow/rules/dirac.smk).
METHOD_SPECS = {
    "dirac-po": {"display": "Dirac-PO", "order": 10, "env": "torch", "rules": "dirac", "tuning": "own", "section": "dirac", "section_required": True,
                 "schema": "dirac.schema.yaml", "figures": ["lpips-nfe"], "gpu": True},
    "dirac-do": {"display": "Dirac-DO", "order": 20, "env": "torch", "rules": "dirac", "tuning": "own", "section": "dirac", "section_required": True,
                 "schema": "dirac.schema.yaml", "figures": ["lpips-nfe"], "gpu": True},
}

VARIANTS = ("po", "do")
SAMPLER_KEYS = ("model_dt", "dt", "estimator", "delta", "guidance", "zeta", "guidance_sign", "output")
RUN_KEYS = ("batch_size", "lpips_every", "lpips")
POSTERIOR_KEYS = ("posterior_images", "posterior_samples", "posterior_t_stop")
INFO_KEYS = ("nfe", "selected_by")  # written to chosen.yaml by `tune`, informational only


def model_input_name(model_dt: float) -> str:
    """The --input name of the weights trained with look-ahead `model_dt` (e.g. model-dt1)."""
    return f"model-dt{float(model_dt):g}"


def _require(data: dict, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{what} lacks {missing}; see the dirac section of the config schema")


def _load(problem: Problem, ctx: RunContext, model_dt: float):
    return ctx.cached(("dirac", float(model_dt), json.dumps(problem.spec, sort_keys=True)), lambda: _build(problem, ctx, model_dt))


def _build(problem: Problem, ctx: RunContext, model_dt: float):
    model = load_model(ctx.input(model_input_name(model_dt)), "dirac", ctx.device, image_size=int(problem.y.shape[-1]))
    family = scheduled_family(problem.spec, ctx.input("schedule"), device=ctx.device)
    noise = GeometricNoise.from_dict(problem.spec["noise"])
    return model, family, noise


def _lpips(settings: dict | None, device: torch.device):
    from diracbench.metrics.perceptual import LPIPSMetric

    if not settings:
        raise UserError("LPIPS along the Dirac trajectory needs lpips settings {net, upsample_below}")
    return LPIPSMetric(net=settings["net"], upsample_below=settings["upsample_below"], device=device)


@dataclass
class _Recorder:
    """Per-step log of one batch; keeps clipped estimates at the steps that get LPIPS/FD later."""

    x: torch.Tensor
    y: torch.Tensor
    a_1: object
    every: int  # 0: no stored steps (dc/PSNR only)
    keep_iterate: bool = False
    rows: list = field(default_factory=list)
    stored: dict = field(default_factory=dict)  # (quantity, step) -> (B, C, H, W) float32 on CPU
    last: tuple | None = None

    def __call__(self, step: int, t: float, x0_hat: torch.Tensor, iterate: torch.Tensor | None) -> None:
        dc = data_consistency(self.y, x0_hat, self.a_1)
        clipped = x0_hat.clamp(0, 1)
        # Per-step numbers stay on the device until the batch is done: no host sync inside the loop.
        row = {"step": step, "t": t, "nfe": step + 1, "dc": dc, "psnr": psnr(clipped, self.x)}
        if self.keep_iterate and iterate is not None:
            row["psnr_iterate"] = psnr(iterate.clamp(0, 1), self.x)
        self.rows.append(row)
        if self.every and step % self.every == 0:
            self._store(step, clipped, iterate)
        self.last = (step, clipped, iterate)

    def _store(self, step: int, clipped: torch.Tensor, iterate: torch.Tensor | None) -> None:
        self.stored[("x0_hat", step)] = clipped.detach().cpu()
        if self.keep_iterate and iterate is not None:
            self.stored[("iterate", step)] = iterate.clamp(0, 1).detach().cpu()

    def finish(self) -> None:
        if self.every and self.last is not None and ("x0_hat", self.last[0]) not in self.stored:
            self._store(*self.last)


@dataclass
class _Run:
    output: np.ndarray  # (N, C, H, W)
    nfe: np.ndarray
    seconds: np.ndarray
    rows: pd.DataFrame  # one row per image and step: image, step, t, nfe, dc, psnr[, psnr_iterate]
    stored: dict  # (quantity, step) -> (N, C, H, W) CPU tensor


def _run(model, family, noise, y: torch.Tensor, x: torch.Tensor, seeds: list[int], settings: SamplerSettings, batch_size: int, every: int, record: bool, keep_iterate: bool = False) -> _Run:
    outs, nfes, secs, frames = [], [], [], []
    stored: dict = {}
    a_1 = family.at(1.0)
    for start in range(0, len(y), batch_size):
        sl = slice(start, min(len(y), start + batch_size))
        gens = image_generators(seeds[sl], device=y.device)
        rec = _Recorder(x[sl], y[sl], a_1, every, keep_iterate) if record else None
        tic = time.perf_counter()
        out, nfe = dirac_sample(model, family, noise, y[sl], gens, settings, on_step=rec)
        if y.device.type == "cuda":
            torch.cuda.synchronize(y.device)
        elapsed = time.perf_counter() - tic
        n = sl.stop - sl.start
        outs.append(out.detach().cpu().numpy().astype(np.float32))
        nfes.append(np.full(n, nfe))
        secs.append(np.full(n, elapsed / n))
        if rec is not None:
            rec.finish()
            for r in rec.rows:
                frame = pd.DataFrame({"image": np.arange(sl.start, sl.stop), "step": r["step"], "t": r["t"], "nfe": r["nfe"], "dc": r["dc"].cpu().numpy(), "psnr": r["psnr"].cpu().numpy()})
                if "psnr_iterate" in r:
                    frame["psnr_iterate"] = r["psnr_iterate"].cpu().numpy()
                frames.append(frame)
            for key, value in rec.stored.items():
                stored.setdefault(key, []).append(value)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    stored = {k: torch.cat(v) for k, v in stored.items() if sum(len(p) for p in v) == len(y)}
    return _Run(np.concatenate(outs), np.concatenate(nfes), np.concatenate(secs), rows, stored)


def _lpips_column(run: _Run, x: torch.Tensor, metric, quantity: str = "x0_hat") -> pd.Series:
    """LPIPS of every stored step, computed in one batched pass after sampling."""
    steps = sorted(s for (q, s) in run.stored if q == quantity)
    values = pd.Series(np.nan, index=run.rows.index, dtype=np.float64)
    if not steps:
        return values
    est = torch.cat([run.stored[(quantity, s)] for s in steps])
    ref = x.detach().cpu().clamp(0, 1).repeat(len(steps), 1, 1, 1)
    d = metric(est, ref).numpy().reshape(len(steps), -1)
    lookup = {(s, i): d[k, i] for k, s in enumerate(steps) for i in range(d.shape[1])}
    return pd.Series([lookup.get((s, i), np.nan) for s, i in zip(run.rows["step"], run.rows["image"])], index=run.rows.index, dtype=np.float64)


def _trajectory(run: _Run, names: list[str], lpips: pd.Series) -> pd.DataFrame:
    traj = run.rows[["image", "step", "t", "nfe", "dc", "psnr"]].copy()
    traj.insert(1, "name", [names[i] for i in traj["image"]])
    traj["lpips"] = lpips.to_numpy()
    return traj[TRAJECTORY_COLUMNS].sort_values(["image", "step"], kind="stable").reset_index(drop=True)


def sampler_settings(hp: dict) -> SamplerSettings:
    if isinstance(hp.get("t_stop"), str):
        raise UserError(f"Dirac-{hp.get('variant', '?').upper()} has t_stop {hp['t_stop']!r}: pass the tuning rule's chosen.yaml (--tuned chosen.yaml:<variant>) or set a number")
    return SamplerSettings.from_dict(hp)


def check_hparams(hparams: dict) -> dict:
    _require(hparams, ("variant", "t_stop") + SAMPLER_KEYS + RUN_KEYS + POSTERIOR_KEYS, "Dirac sampling settings")
    known = set(("variant", "t_stop") + SAMPLER_KEYS + RUN_KEYS + POSTERIOR_KEYS + INFO_KEYS)
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise UserError(f"unknown Dirac sampling settings {unknown}; known: {sorted(known)}")
    if hparams["variant"] not in VARIANTS:
        raise UserError(f"Dirac variant must be one of {list(VARIANTS)} (got {hparams['variant']!r})")
    return hparams


def reconstruct(problem: Problem, hparams: dict, ctx: RunContext, extras: bool = True) -> Reconstruction:
    """Sample every image; with `extras`, also the posterior samples of the first images
    (`sample` asks for them separately, once, via `reconstruct_extras`)."""
    hp = check_hparams(hparams)
    settings = sampler_settings(hp)
    model, family, noise = _load(problem, ctx, hp["model_dt"])
    every = int(hp["lpips_every"] or 0)
    variant = hp["variant"]
    seeds = problem.image_seeds("dirac", variant, ctx.seed)
    run = _run(model, family, noise, problem.y, problem.x, seeds, settings, int(hp["batch_size"]), every, record=True)
    lp = _lpips_column(run, problem.x, _lpips(hp["lpips"], ctx.device)) if every else pd.Series(np.nan, index=run.rows.index)
    return Reconstruction(run.output, run.nfe, run.seconds, _trajectory(run, problem.names, lp), extras=reconstruct_extras(problem, hp, ctx) if extras else {})


def reconstruct_extras(problem: Problem, hparams: dict, ctx: RunContext) -> dict[str, dict[str, np.ndarray]]:
    """K seeded posterior samples of each of the first S images of the split (the uncertainty map)."""
    hp = check_hparams(hparams)
    settings = sampler_settings(hp)
    variant = hp["variant"]
    n_post, k_post = min(int(hp["posterior_images"]), len(problem)), int(hp["posterior_samples"])
    if n_post <= 0 or k_post <= 0:
        return {}
    model, family, noise = _load(problem, ctx, hp["model_dt"])
    names = problem.names[:n_post]
    # Row s*K + k is sample k of image s, each with its own seed.
    y_rep = problem.y[:n_post].repeat_interleave(k_post, 0)
    seeds_rep = [seed_from_string("dirac", variant, ctx.seed, "posterior", k, problem.split, name) for name in names for k in range(k_post)]
    # A t_stop near 1 returns (almost) the posterior mean, whose samples barely differ; a
    # posterior_t_stop runs them further down the reverse path for a meaningful spread.
    post_settings = settings if hp["posterior_t_stop"] is None else SamplerSettings.from_dict({**hp, "t_stop": float(hp["posterior_t_stop"])})
    post = _run(model, family, noise, y_rep, problem.x[:n_post].repeat_interleave(k_post, 0), seeds_rep, post_settings, int(hp["batch_size"]), 0, record=False)
    samples = np.clip(post.output, 0, 1).reshape(n_post, k_post, *problem.y.shape[1:]).astype(np.float32)
    return {"posterior_samples": {"samples": samples, "names": np.array(names)}}


def _fd_vgg(run: _Run, x: torch.Tensor, feats, quantity: str) -> dict[int, float]:
    from diracbench.metrics.perceptual import frechet_distance

    ref = feats(x.detach().cpu()).numpy()
    return {s: frechet_distance(feats(v).numpy(), ref) for (q, s), v in sorted(run.stored.items()) if q == quantity}


def tune(problem: Problem, settings: dict, ctx: RunContext) -> TuningResult:
    """t_stop per variant, and whatever else the config's search space names (methods.dirac_tuning)."""
    from diracbench.methods import dirac_tuning

    return dirac_tuning.tune(problem, settings, ctx)
