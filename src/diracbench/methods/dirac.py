"""Dirac-PO and Dirac-DO: the Dirac reverse process, stopped early at a t chosen on val.

`reconstruct` samples a measurement set with one variant's settings (the hparams the sample CLI
merges from config and `chosen.yaml:<variant>`), logging through the harness's recorder (when it
passes one) per step and image the t, NFE, data-consistency residual mean((y - A_1(x0_hat))^2),
PSNR and (every `lpips_every` steps, batched after sampling) LPIPS of x0_hat; optionally K seeded posterior samples of the first S images
(for the uncertainty map; stopped at `posterior_t_stop`, or at the variant's t_stop when that is
null), returned as the `posterior_samples` extra output.

`tune` runs the whole reverse process (t_stop = 0) on the val split once per distinct model and
sampler setting and picks t_stop per variant: DO at the peak of the mean PSNR of x0_hat, PO at
the best perceptual score (LPIPS for deblurring, FD-VGG for inpainting by default; FD-VGG, a
Fréchet distance of VGG16 features, stands in for FID, whose Inception weights may be absent).
A variant whose config gives a number for t_stop keeps it (e.g. to reproduce the paper's values).
With a search space in the config (`dirac.tasks.<task>.search`), the same runs also choose the
guidance scheme and zeta, the output, dt and the model's look-ahead (methods/dirac_tuning.py).

Inputs (RunContext): the recorder (required by `tune`, which scores the path against the clean
val images), `model-dt<dt>` (weights of the model trained with look-ahead dt, e.g.
`model-dt1`) and `schedule` (schedule.csv of the task).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from diracbench.dirac import scheduled_family
from diracbench.dirac.sampler import SamplerSettings, dirac_sample
from diracbench.errors import UserError
from diracbench.methods.base import Problem, Reconstruction, RunContext, TuningResult, recorder_for
from diracbench.metrics.recorder import Trajectory, recording_seconds
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


@dataclass
class _Run:
    output: np.ndarray  # (N, C, H, W)
    nfe: np.ndarray
    seconds: np.ndarray


def _run(model, family, noise, y: torch.Tensor, seeds: list[int], settings: SamplerSettings, batch_size: int, log: Trajectory | None = None) -> _Run:
    """Sample `y` batch by batch into `log` (whose recorder holds the images of `y`, in order)."""
    outs, nfes, secs = [], [], []
    for start in range(0, len(y), batch_size):
        sl = slice(start, min(len(y), start + batch_size))
        gens = image_generators(seeds[sl], device=y.device)
        callback = None if log is None else log.bind(np.arange(sl.start, sl.stop))
        tic, recorded = time.perf_counter(), recording_seconds(log)
        out, nfe = dirac_sample(model, family, noise, y[sl], gens, settings, on_step=callback)
        if y.device.type == "cuda":
            torch.cuda.synchronize(y.device)
        elapsed = time.perf_counter() - tic - (recording_seconds(log) - recorded)
        n = sl.stop - sl.start
        outs.append(out.detach().cpu().numpy().astype(np.float32))
        nfes.append(np.full(n, nfe))
        secs.append(np.full(n, elapsed / n))
    return _Run(np.concatenate(outs), np.concatenate(nfes), np.concatenate(secs))


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
    variant = hp["variant"]
    seeds = problem.image_seeds("dirac", variant, ctx.seed)
    recorder = recorder_for(problem, ctx)
    # Every step gets a row; LPIPS every `lpips_every` steps, in one pass after sampling.
    log = None if recorder is None else recorder.trajectory(every=1, lpips_every=int(hp["lpips_every"] or 0), lpips=hp["lpips"], deferred=True)
    run = _run(model, family, noise, problem.y, seeds, settings, int(hp["batch_size"]), log)
    trajectory = None if log is None else log.frame()
    return Reconstruction(run.output, run.nfe, run.seconds, trajectory, extras=reconstruct_extras(problem, hp, ctx) if extras else {})


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
    post = _run(model, family, noise, y_rep, seeds_rep, post_settings, int(hp["batch_size"]))
    samples = np.clip(post.output, 0, 1).reshape(n_post, k_post, *problem.y.shape[1:]).astype(np.float32)
    return {"posterior_samples": {"samples": samples, "names": np.array(names)}}


def tune(problem: Problem, settings: dict, ctx: RunContext) -> TuningResult:
    """t_stop per variant, and whatever else the config's search space names (methods.dirac_tuning)."""
    from diracbench.methods import dirac_tuning

    return dirac_tuning.tune(problem, settings, ctx)
