"""Batched versus official-style loops, on the trained Dirac network of each task.

Sampling: images/s of `dirac_sample` at each configured batch size against
`official.official_style_sample` (one image at a time, operators rebuilt per call), both running
the task's Dirac-PO sampler settings over the full reverse process with `steps` steps.
Loss: one training step's loss forward + backward of `ir_loss` on a training batch against
`official.official_style_loss` (per-sample operators), and the operator work of the loss alone.

Everything runs in this one process, with the same threads and the same network, each timing the
median of `repeats` runs after a warm-up. Each comparison also records how far the two results
are apart (max |difference| of the samples, relative difference of the loss), so a speed-up never
comes from computing something else.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diracbench.bench.machine import machine_info, median_seconds
from diracbench.bench.official import batched_operators, official_style_loss, official_style_operators, official_style_sample
from diracbench.dirac import scheduled_family
from diracbench.dirac.loss import ir_loss
from diracbench.dirac.sampler import SamplerSettings, dirac_sample
from diracbench.errors import UserError
from diracbench.operators import GeometricNoise, load_operator_spec
from diracbench.seeding import image_generators, seed_from_string

COLUMNS = ["dataset", "task", "measure", "implementation", "batch_size", "images", "steps", "nfe", "repeats", "median_s", "min_s", "images_per_s", "speedup_vs_loop", "difference", "difference_kind"]
REQUIRED = ("steps", "batch_sizes", "loop_images", "repeats", "seed", "tasks")
TASK_REQUIRED = ("sampler", "loss", "loss_batch_size")


def sampler_for_bench(po: dict, steps: int) -> SamplerSettings:
    """The task's Dirac-PO sampler over the full reverse process with `steps` steps."""
    dt = 1.0 / steps
    delta = po.get("delta")
    return SamplerSettings.from_dict({**po, "dt": dt, "t_stop": 0.0, "delta": None if delta is None else min(float(delta), dt)})


def _cycle(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[torch.arange(n) % x.shape[0]]


def bench_task(name: str, task: dict, files: dict[str, Path], s: dict, device: torch.device) -> list[dict]:
    from diracbench.data import load_split, to_unit_float
    from diracbench.io import read_npz
    from diracbench.nn.models import load_model

    dataset, task_name = name.split(":")
    spec = load_operator_spec(files["operator"])
    family = scheduled_family(spec, files["schedule"], device=device)
    noise = GeometricNoise.from_dict(spec["noise"])
    y_all = torch.from_numpy(read_npz(files["measurements"], required=("y",), producer="the 'measure' rule")["y"]).to(device)
    model = load_model(files["model"], "dirac", device, image_size=int(y_all.shape[-1]))
    steps, repeats = int(s["steps"]), int(s["repeats"])
    settings = sampler_for_bench(task["sampler"], steps)
    seeds = [seed_from_string("bench", s["seed"], name, i) for i in range(max(max(s["batch_sizes"]), s["loop_images"]))]
    rows: list[dict] = []
    base = {"dataset": dataset, "task": task_name}

    def sample_rows() -> list[dict]:
        out = []
        n_loop = int(s["loop_images"])
        y_loop = _cycle(y_all, n_loop)
        holder = {}

        def loop() -> None:
            holder["loop"] = official_style_sample(model, family, noise, y_loop, image_generators(seeds[:n_loop], device=device), settings)

        official_style_sample(model, family, noise, y_loop[:1], image_generators(seeds[:1], device=device), settings)  # warm-up
        med, times = median_seconds(loop, repeats, device, warmup=0)
        loop_rate = n_loop / med
        batched_same, nfe = dirac_sample(model, family, noise, y_loop, image_generators(seeds[:n_loop], device=device), settings)
        diff = float((batched_same - holder["loop"][0]).abs().max())
        out.append({**base, "measure": "sampling", "implementation": "official_loop", "batch_size": 1, "images": n_loop, "steps": steps, "nfe": nfe,
                    "repeats": repeats, "median_s": med, "min_s": min(times), "images_per_s": loop_rate, "speedup_vs_loop": 1.0,
                    "difference": diff, "difference_kind": "max |batched - loop| of the samples"})
        for b in s["batch_sizes"]:
            y_b = _cycle(y_all, int(b))
            med, times = median_seconds(lambda: dirac_sample(model, family, noise, y_b, image_generators(seeds[: int(b)], device=device), settings), repeats, device)
            out.append({**base, "measure": "sampling", "implementation": "batched", "batch_size": int(b), "images": int(b), "steps": steps, "nfe": nfe,
                        "repeats": repeats, "median_s": med, "min_s": min(times), "images_per_s": int(b) / med, "speedup_vs_loop": (int(b) / med) / loop_rate,
                        "difference": math.nan, "difference_kind": ""})
        return out

    def loss_rows() -> list[dict]:
        out = []
        images = load_split(files["train"])
        b = int(task["loss_batch_size"])
        x0 = torch.from_numpy(to_unit_float(images[np.arange(b) % len(images)])).to(device)
        dt, clean = float(task["loss"]["dt"]), bool(task["loss"]["clean_space_at_tau0"])
        model.train()
        gen_seed = seed_from_string("bench-loss", s["seed"], name)

        def step(fn) -> float:
            model.zero_grad(set_to_none=True)
            torch.manual_seed(gen_seed)  # the same dropout masks for both implementations
            gen = torch.Generator(device=device).manual_seed(gen_seed)
            loss = fn(model, x0, gen, family, noise, dt, clean)
            loss.backward()
            return float(loss.detach())

        values = {}
        timings = {}
        for impl, fn in (("official_loop", official_style_loss), ("batched", ir_loss)):
            values[impl] = step(fn)
            timings[impl] = median_seconds(lambda fn=fn: step(fn), repeats, device)
        rel = abs(values["batched"] - values["official_loop"]) / max(abs(values["official_loop"]), 1e-12)
        loop_s = timings["official_loop"][0]
        for impl in ("official_loop", "batched"):
            med, times = timings[impl]
            out.append({**base, "measure": "loss_step", "implementation": impl, "batch_size": b, "images": b, "steps": 1, "nfe": 1,
                        "repeats": repeats, "median_s": med, "min_s": min(times), "images_per_s": b / med, "speedup_vs_loop": loop_s / med,
                        "difference": rel if impl == "batched" else math.nan, "difference_kind": "relative |batched - loop| of the loss value" if impl == "batched" else ""})
        model.eval()
        g = torch.Generator().manual_seed(gen_seed)
        t = torch.rand(b, generator=g, dtype=torch.float64)
        tau = (t - dt).clamp_min(0.0)
        ops = {}
        results = {}
        with torch.no_grad():
            for impl, fn in (("official_loop", official_style_operators), ("batched", batched_operators)):
                results[impl] = fn(family, x0, t.to(device), tau.to(device))
                ops[impl] = median_seconds(lambda fn=fn: fn(family, x0, t.to(device), tau.to(device)), repeats, device)
        diff = float((results["batched"] - results["official_loop"]).abs().max())
        for impl in ("official_loop", "batched"):
            med, times = ops[impl]
            out.append({**base, "measure": "loss_operators", "implementation": impl, "batch_size": b, "images": b, "steps": 1, "nfe": 0,
                        "repeats": repeats, "median_s": med, "min_s": min(times), "images_per_s": b / med, "speedup_vs_loop": ops["official_loop"][0] / med,
                        "difference": diff if impl == "batched" else math.nan, "difference_kind": "max |batched - loop| of the operator outputs" if impl == "batched" else ""})
        return out

    rows += sample_rows()
    rows += loss_rows()
    return rows


def main_batching(settings: dict, inputs: dict[str, Path], out: Path, device: torch.device) -> pd.DataFrame:
    from diracbench.io import atomic_path
    from diracbench.provenance import write_provenance

    missing = [k for k in REQUIRED if k not in settings]
    if missing:
        raise UserError(f"bench batching: --settings lacks {missing}")
    if not settings["tasks"]:
        raise UserError("bench batching: --settings names no tasks")
    machine = machine_info(device)
    rows = []
    for name, task in settings["tasks"].items():
        lacking = [k for k in TASK_REQUIRED if k not in task]
        if lacking:
            raise UserError(f"bench batching: --settings tasks.{name} lacks {lacking}")
        files = {}
        for key in ("operator", "schedule", "model", "measurements", "train"):
            path = inputs.get(f"{name}:{key}")
            if path is None:
                raise UserError(f"bench batching: --input {name}:{key}=PATH is missing")
            files[key] = path
        print(f"bench batching: {name} ...", flush=True)
        rows += bench_task(name, task, files, settings, device)
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    write_provenance(out, "bench_batching", settings, device=str(device), extra={"machine": machine, "load_average_after": machine_info(device)["load_average_1min"]})
    return table
