"""Dirac's tuning on val: a grid over the sampler settings the paper tuned, t_stop read off the path.

The paper (dirac-method.md §6.4, its Table 3) tunes per task and variant the guidance scheme and
its step size zeta, the output (x0_hat or the final iterate), the reverse step dt, the trained
model's look-ahead dt (`model_dt`) and the early-stopping severity t_stop. Here a variant's
candidates are the cartesian product of the config's search space (`dirac.tasks.<task>.search.
<variant>`; absent keys keep the variant's fixed value) and every candidate is scored at every
step of its reverse path:

- one reverse run (t_stop = 0) per distinct *run* setting (model_dt, dt, estimator, guidance,
  zeta, ...), shared by every candidate and variant that only differs in t_stop and output: a run
  stopped at step i returns exactly the x0_hat of step i of the full run (or its iterate after
  that step), because each image's noise comes from its own seeded generator, step by step;
- grid.csv holds one row per variant, candidate and step (the searched values in `param_<key>`
  columns), and the variant's choice is the best row by its objective over all of them.

With an empty search space the result is the t_stop-only tuning of before, byte for byte
(chosen.yaml, grid.csv and trajectory.csv): the same runs, rows, columns and order.

trajectory.csv holds, per variant, the per-image path of its chosen candidate's run (x0_hat).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from diracbench.errors import UserError
from diracbench.metrics.registry import better, resolve_objective

if TYPE_CHECKING:  # torch-free at import: the resource planner expands search spaces too
    from diracbench.methods.base import Problem, RunContext, TuningResult

VARIANTS = ("po", "do")
# The sampler's choices (dirac.sampler ESTIMATORS, GUIDANCE, OUTPUTS; a unit test keeps them equal).
ESTIMATORS = ("look_ahead", "small_look_ahead", "look_back")
GUIDANCE = ("none", "std", "error")
OUTPUTS = ("x0_hat", "iterate")
# Search-space keys in the order of grid.csv's param_ columns (guidance brings zeta with it).
SEARCH_KEYS = ("model_dt", "dt", "estimator", "guidance", "output")
PARAM_ORDER = ("model_dt", "dt", "estimator", "guidance", "zeta", "output")
# Settings that change the reverse run itself (t_stop and output are read off one run).
RUN_KEYS = ("model_dt", "dt", "estimator", "delta", "guidance", "zeta", "guidance_sign")
SAMPLER_KEYS = RUN_KEYS + ("output",)


def check_search(search: dict | None, variant: str) -> dict:
    """The search space of one variant, validated (one-line errors naming the config key)."""
    if not search:
        return {}
    where = f"dirac search space of {variant}"
    unknown = sorted(set(search) - set(SEARCH_KEYS))
    if unknown:
        raise UserError(f"{where} has unknown keys {unknown}; use some of {list(SEARCH_KEYS)}")
    for key, values in search.items():
        if key == "guidance":
            if not isinstance(values, dict) or not values:
                raise UserError(f"{where}: guidance must map schemes ({list(GUIDANCE)}) to lists of zeta, e.g. {{none: [0], std: [0.5, 1.0]}}")
            for scheme, zetas in values.items():
                if scheme not in GUIDANCE:
                    raise UserError(f"{where}: unknown guidance scheme {scheme!r}; use some of {list(GUIDANCE)}")
                if not isinstance(zetas, list) or not zetas or any(isinstance(z, bool) or not isinstance(z, (int, float)) or z < 0 for z in zetas):
                    raise UserError(f"{where}: guidance.{scheme} must be a non-empty list of zeta >= 0 (none: [0])")
            continue
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: {key} must be a non-empty list of values")
        allowed = {"estimator": ESTIMATORS, "output": OUTPUTS}.get(key)
        if allowed is not None and any(v not in allowed for v in values):
            raise UserError(f"{where}: {key} values must be among {list(allowed)} (got {values})")
    return search


def searched_params(search_by_variant: dict) -> list[str]:
    """The param_ columns of grid.csv: every key some variant searches (guidance adds zeta)."""
    keys = {k for s in search_by_variant.values() for k in (s or {})}
    if "guidance" in keys:
        keys.add("zeta")
    return [k for k in PARAM_ORDER if k in keys]


def candidates(hp: dict, search: dict) -> list[dict]:
    """The variant's settings with every combination of the searched values, in a fixed order."""
    axes: list[list[dict]] = []
    for key in SEARCH_KEYS:
        if key not in search:
            continue
        if key == "guidance":
            pairs = []
            for scheme in GUIDANCE:  # fixed scheme order, whatever the mapping's order
                for zeta in search["guidance"].get(scheme, []):
                    pair = {"guidance": scheme, "zeta": 0.0 if scheme == "none" else float(zeta)}
                    if pair not in pairs:
                        pairs.append(pair)
            axes.append(pairs)
        else:
            values = [float(v) for v in search[key]] if key in ("model_dt", "dt") else list(search[key])
            axes.append([{key: v} for v in dict.fromkeys(values)])
    out = []
    for combo in itertools.product(*axes):
        cand = dict(hp)
        for part in combo:
            cand.update(part)
        out.append(cand)
    return out


def run_key(cand: dict) -> str:
    return json.dumps({k: cand[k] for k in RUN_KEYS}, sort_keys=True)


def best_row(values: np.ndarray, objective: str) -> int:
    if np.isnan(values).all():
        raise ValueError("no scored row")
    return int(np.nanargmax(values) if better(objective) == "max" else np.nanargmin(values))


def _objectives(problem: Problem, tuning: dict) -> dict[str, str]:
    objectives = {"po": tuning["po_metric"], "do": tuning["do_metric"]}
    for v, m in list(objectives.items()):
        objectives[v] = resolve_objective(m, problem.task, f"{v}_metric")
    return objectives


def tune(problem: "Problem", settings: dict, ctx: "RunContext") -> "TuningResult":
    # The run machinery lives with the method; imported here to keep the import graph one-way.
    from diracbench.dirac.sampler import SamplerSettings
    from diracbench.methods import dirac as m
    from diracbench.methods.base import TuningResult, recorder_for

    m._require(settings, ("variants", "tuning", "lpips", "batch_size"), "Dirac tuning settings")
    tuning = settings["tuning"]
    m._require(tuning, ("po_metric", "do_metric", "lpips_every"), "dirac tuning settings")
    every = int(tuning["lpips_every"])
    if every < 1:
        raise UserError("dirac tuning lpips_every must be at least 1 (PO is chosen among the steps that get a perceptual score)")
    objectives = _objectives(problem, tuning)
    search = settings.get("search") or {}
    unknown = sorted(set(search) - set(VARIANTS))
    if unknown:
        raise UserError(f"dirac search space has unknown variants {unknown}; use po and/or do")
    search = {v: check_search(search.get(v), v) for v in VARIANTS}
    params = searched_params(search)
    variants, cands = {}, {}
    for v in VARIANTS:
        hp = {**settings["variants"][v], "variant": v}
        m._require(hp, SAMPLER_KEYS + ("t_stop",), f"dirac variant {v}")
        if isinstance(hp["t_stop"], str) and hp["t_stop"] != "tune":
            raise UserError(f"dirac variant {v} t_stop must be a number or 'tune' (got {hp['t_stop']!r})")
        variants[v] = hp
        cands[v] = candidates(hp, search[v])
    # What each distinct run must provide: which quantities, and which of them need FD-VGG.
    runs: dict[str, dict] = {}
    for v in VARIANTS:
        for cand in cands[v]:
            entry = runs.setdefault(run_key(cand), {"hp": cand, "fd": set(), "quantities": []})
            if cand["output"] not in entry["quantities"]:
                entry["quantities"].append(cand["output"])
            if objectives[v] == "fd_vgg":
                entry["fd"].add(cand["output"])
    recorder = recorder_for(problem, ctx)
    if recorder is None:
        raise UserError("Dirac's tuning scores its reverse path against the clean val images, which only the harness holds: run it through `python -m diracbench.tune` (or pass RunContext.recorder)")
    seeds = problem.image_seeds("dirac", "tune", ctx.seed)
    for key, entry in runs.items():
        hp = entry["hp"]
        full = SamplerSettings.from_dict({**hp, "t_stop": 0.0})
        model, family, noise = m._load(problem, ctx, hp["model_dt"])
        # Every step of the path is a row; LPIPS and FD-VGG every `lpips_every` steps and the last.
        log = recorder.trajectory(every=1, lpips_every=every, lpips=settings["lpips"], deferred=True, iterate="iterate" in entry["quantities"])
        tic = time.perf_counter()
        m._run(model, family, noise, problem.y, seeds, full, int(settings["batch_size"]), log)
        users = "+".join(v for v in VARIANTS if any(run_key(c) == key for c in cands[v]))
        label = ", ".join([users] + [f"{k}={hp[k]}" for k in params if k in RUN_KEYS])
        print(f"dirac tuning run ({label}): {full.steps} steps on {len(problem)} val images in {time.perf_counter() - tic:.1f}s", flush=True)
        entry["trajectory"] = log.frame()
        entry["per_step"] = {q: log.per_step(q, fd_vgg=q in entry["fd"]) for q in entry["quantities"]}
    chosen, grids, trajs = {}, [], []
    for v in VARIANTS:
        grid, owner = _variant_grid(v, cands[v], runs, params, objectives[v])
        hp_v = variants[v]
        objective = objectives[v]
        if hp_v["t_stop"] == "tune":
            if objective not in grid or grid[objective].isna().all():
                raise UserError(f"dirac tuning could not score {objective} for variant {v}")
            values = grid[objective].to_numpy(dtype=np.float64)
            best = best_row(values, objective)
            selected = {"by": objective, "value": float(values[best]), "split": problem.split, "n_images": len(problem)}
        else:
            # A fixed t_stop: each candidate's step nearest to it; several candidates compete there.
            t_fixed = float(hp_v["t_stop"])
            near = [int(idx[np.argmin(np.abs(grid.loc[idx, "t"].to_numpy() - t_fixed))]) for idx in _rows_by_candidate(owner)]
            if len(near) == 1:
                best = near[0]
                selected = {"by": "config", "value": None, "split": problem.split, "n_images": len(problem)}
            else:
                if objective not in grid or grid.loc[near, objective].isna().all():
                    raise UserError(f"dirac tuning could not score {objective} for variant {v} at its fixed t_stop {t_fixed}; lower dirac.tuning.lpips_every so that step is scored")
                values = grid.loc[near, objective].to_numpy(dtype=np.float64)
                best = near[best_row(values, objective)]
                selected = {"by": f"config t_stop, {objective}", "value": float(grid.loc[best, objective]), "split": problem.split, "n_images": len(problem)}
        cand = cands[v][owner[best]]
        selected["quantity"] = cand["output"]
        grid.loc[best, "chosen"] = True
        t_stop = float(grid.loc[best, "t"]) if hp_v["t_stop"] == "tune" else float(hp_v["t_stop"])
        nfe = SamplerSettings.from_dict({**cand, "t_stop": t_stop}).nfe()
        chosen[v] = {"t_stop": t_stop, "nfe": nfe, "selected_by": selected, **{k: cand[k] for k in params}}
        grids.append(grid)
        trajs.append(runs[run_key(cand)]["trajectory"].assign(variant=v))
    grid = pd.concat(grids, ignore_index=True)
    trajectory = pd.concat(trajs, ignore_index=True)
    return TuningResult(chosen={v: chosen[v] for v in VARIANTS}, grid=grid, trajectory=trajectory)


def _variant_grid(variant: str, cands: list[dict], runs: dict, params: list[str], objective: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per candidate and step; `owner[i]` is the candidate index of row i."""
    frames, owner = [], []
    for i, cand in enumerate(cands):
        frame = runs[run_key(cand)]["per_step"][cand["output"]].copy()
        frame.insert(0, "variant", variant)
        for j, key in enumerate(params):
            frame.insert(1 + j, f"param_{key}", cand[key])
        frame["quantity"] = cand["output"]
        frame["objective"] = objective
        frame["chosen"] = False
        frames.append(frame)
        owner.extend([i] * len(frame))
    return pd.concat(frames, ignore_index=True), np.asarray(owner)


def _rows_by_candidate(owner: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(owner == i) for i in range(int(owner.max()) + 1)]
