"""Sampling and scoring at the presets' real size, measured beside the resource planner's estimates.

Part of `python -m diracbench.bench gpu` (see gpu.py). For each preset (paper-ffhq, paper-imagenet)
it runs, on randomly initialised networks of the sizes the workflow would load (timings do not
depend on the weights, so no checkpoint is needed):
- DPS through `methods.dps.reconstruct` on the preset's prior (the published layout the prior
  loader builds: SDEdit's DDPM U-Net for FFHQ, guided-diffusion's ADM U-Net for ImageNet) at 256 px;
- DDRM through `methods.ddrm.reconstruct` on the same prior;
- Dirac's guided sampling (`dirac_sample`, the preset's PO settings: guidance, estimator) on the
  preset's Dirac network, for each task;
- LPIPS-VGG scoring plus FD-VGG features, as the metrics stage batches them;
each at the batch size the planner picks (`diracbench.plan`: the configured batch, capped at the
largest that fits the planned device memory). A few steps/NFEs are timed after one warm-up run and
extrapolated to the job's NFE per image; the planner's seconds per image, device memory and
TFLOP/s stand beside the measurement (the planner assumes the preset's `cluster:` device, an A100
by default, so the ratio also shows how much faster the GPU at hand is).

`--allow-cpu --tiny` runs the same code on the tiny test configuration's networks on the CPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from diracbench.bench.machine import synchronize
from diracbench.textables import markdown_table

ROOT = Path(__file__).resolve().parents[3]
PRESETS = (ROOT / "workflow" / "presets" / "paper-ffhq.yaml", ROOT / "workflow" / "presets" / "paper-imagenet.yaml")
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"
COLUMNS = [
    "config", "job", "what", "network", "params_m", "batch", "planned_batch", "timed_nfe", "seconds", "nfe_per_image",
    "measured_s_per_image", "planned_s_per_image", "planned_over_measured", "measured_tflops", "planned_tflops",
    "peak_memory_gib", "planned_memory_gib", "measured_job_hours", "planned_job_hours", "status",
]


def load_config(path: Path) -> dict:
    from diracbench.io import read_yaml

    return read_yaml(path, producer="you (a config file)")


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def _timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _problem(config: dict, dataset: str, task: str, batch: int, device: torch.device):
    """`batch` random test images of the dataset's size, measured with the task's real operator:
    (problem, noise, clean images)."""
    from diracbench.methods.base import Problem
    from diracbench.operators import GeometricNoise, family_from_config, operator_spec

    size = int(config["datasets"][dataset]["image_size"])
    family = family_from_config(config["tasks"][task]["operator"], size, device=device)
    noise = GeometricNoise(float(config["noise"]["sigma_min"]), float(config["noise"]["sigma_max"]))
    spec = operator_spec(family, noise, task)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device, generator=g)
    y = family.apply(x, 1.0) + float(spec["sigma_1"]) * torch.randn(x.shape, device=device, generator=g)
    return Problem(y, [f"img{i}" for i in range(batch)], spec, family, family.measurement_operator(), float(spec["sigma_1"]), "test"), noise, x


def _prior_hparams(config: dict, dataset: str) -> dict:
    pre = config["prior"]["pretrained"].get(dataset)
    return {"format": pre["format"] if pre else "diracbench", **{k: config["prior"][k] for k in ("beta_start", "beta_end", "num_timesteps")}}


def _random_prior(config: dict, dataset: str, device: torch.device):
    """The prior network the loader would build, randomly initialised on the device."""
    from diracbench.prior import PriorModel

    pre = config["prior"]["pretrained"].get(dataset)
    size = int(config["datasets"][dataset]["image_size"])
    with torch.device(device):
        if pre:
            from diracbench.prior.pretrained import pretrained_format

            fmt = pretrained_format(pre["format"])
            net, learned, label = fmt.build(), fmt.learned_variance, pre["format"]
        else:
            from diracbench.nn.models import build_model

            net, learned, label = build_model("ddpm", config["training"]["network"], size), False, "diracbench ddpm"
    return PriorModel(net.eval().requires_grad_(False), learned, f"random-init {label}").eval(), label


def _with_grid(hparams: dict, grid: dict) -> dict:
    """The configured values with the first grid value of each tuned key (tuning would choose one)."""
    return {**hparams, **{k: v[0] for k, v in grid.items() if isinstance(v, list) and v}}


def _row(config_name: str, job, what: str, network: str, params: int, batch: int, timed_nfe: int, seconds: float, device: torch.device, flop_per_image_nfe: float) -> dict:
    nfe = float(job.nfe_per_image) if job is not None else float(timed_nfe)
    per_image = seconds / max(1, timed_nfe) / batch * nfe
    planned = job.hours * 3600 / job.images if job is not None and job.images else math.nan
    return {
        "config": config_name, "job": job.name if job is not None else what, "what": what, "network": network, "params_m": params / 1e6, "batch": batch,
        "planned_batch": (job.micro_batch or job.batch_size) if job is not None else batch, "timed_nfe": timed_nfe, "seconds": seconds, "nfe_per_image": nfe,
        "measured_s_per_image": per_image, "planned_s_per_image": planned, "planned_over_measured": planned / per_image if per_image > 0 else math.nan,
        "measured_tflops": flop_per_image_nfe * timed_nfe * batch / seconds / 1e12 if seconds > 0 else math.nan,
        "planned_tflops": (job.tflop * 1e12 / (job.hours * 3600) / 1e12) if job is not None and job.hours else math.nan,
        "peak_memory_gib": _peak_gib(device), "planned_memory_gib": job.memory_gib if job is not None else math.nan,
        "measured_job_hours": per_image * job.images / 3600 if job is not None else math.nan, "planned_job_hours": job.hours if job is not None else math.nan, "status": "ok",
    }


def _failed(config_name: str, job, what: str, batch: int, err: BaseException) -> dict:
    status = "out of memory" if isinstance(err, torch.OutOfMemoryError) else f"failed: {err.__class__.__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    row = {c: math.nan for c in COLUMNS}
    row.update({"config": config_name, "job": job.name if job is not None else what, "what": what, "network": "", "batch": batch, "status": status})
    return row


def _find(jobs, rule: str, dataset: str, task: str = "", tag: str = ""):
    for job in jobs:
        if job.rule == rule and job.dataset == dataset and (not task or job.task == task) and (not tag or job.tag == tag):
            return job
    return None


def _batch(job, tiny: bool) -> int:
    b = int(job.micro_batch or job.batch_size or 1)
    return min(b, 2) if tiny else max(1, b)


def points(config: dict, jobs, tiny: bool) -> list[dict]:
    """What to time for one configuration: (kind, task, job, batch), from the planner's jobs."""
    dataset = sorted(config["datasets"])[0]
    tasks = sorted(config["tasks"])
    out = []
    methods = config["methods"]
    first = "deblur" if "deblur" in tasks else tasks[0]
    if "dps" in methods:
        out.append({"kind": "dps", "dataset": dataset, "task": first, "job": _find(jobs, "sample_dps", dataset, first)})
    if "ddrm" in methods:
        out.append({"kind": "ddrm", "dataset": dataset, "task": first, "job": _find(jobs, "sample_ddrm", dataset, first)})
    if "dirac-po" in methods:
        for task in tasks:
            out.append({"kind": "dirac-po", "dataset": dataset, "task": task, "job": _find(jobs, "sample_dirac-po", dataset, task)})
    out.append({"kind": "lpips", "dataset": dataset, "task": first, "job": _find(jobs, "metrics", dataset, first, "dps")})
    for p in out:
        p["batch"] = _batch(p["job"], tiny) if p["job"] is not None else 2
    return out


def estimate_seconds(config: dict, jobs, tiny: bool, steps: int) -> float:
    """Rough wall time of the timed work at the planner's throughput, plus start-up per point."""
    from diracbench.plan import cluster_settings

    cluster = cluster_settings(config)
    total = 0.0
    for p in points(config, jobs, tiny):
        job = p["job"]
        if job is None:
            continue
        rate = (cluster["tflops_fp32"] * 1e12) if job.device == "gpu" or p["kind"] == "lpips" else cluster["cpu_gflops_per_thread"] * 1e9
        total += 2 * (steps + 1) * p["batch"] * job.gflop_per_image_nfe * 1e9 / rate + (2.0 if tiny else 8.0)  # warm-up + timed, model build
    return total


def measure_point(config: dict, config_name: str, p: dict, device: torch.device, steps: int, threads: int) -> dict:
    from diracbench.methods.base import RunContext

    job, batch, dataset, task = p["job"], p["batch"], p["dataset"], p["task"]
    what = f"{p['kind']} {task}"
    try:
        problem, noise, x = _problem(config, dataset, task, batch, device)
        if p["kind"] in ("dps", "ddrm"):
            from diracbench.methods import load_method

            prior, label = _random_prior(config, dataset, device)
            cfg = config[p["kind"]]
            hp = _with_grid({**cfg["hparams"], "prior": _prior_hparams(config, dataset)}, cfg["grid"].get(task, {}))
            hp.pop("trajectory", None)
            size = int(problem.y.shape[-1])
            ctx = RunContext(device=device, threads=threads, seed=0, inputs={"prior": Path("random-init")})
            # The loader's cache key (prior.sampling.prior_from_context): the method uses this network.
            ctx.cache[("prior", "random-init", hp["prior"]["format"], size)] = prior
            method = load_method(p["kind"])
            method.reconstruct(problem, {**hp, "steps": 1}, ctx)  # warm-up (cuDNN autotuning, allocator)
            _peak_reset(device)
            timed_hp = {**hp, "steps": steps}
            result = {}
            seconds = _timed(lambda: result.update(r=method.reconstruct(problem, timed_hp, ctx)), device)
            timed_nfe = int(result["r"].nfe[0])
            params = sum(t.numel() for t in prior.parameters())
            what += f" ({hp['variance']} variance)" if p["kind"] == "dps" else ""
            return _row(config_name, job, what, label, params, batch, timed_nfe, seconds, device, (job.gflop_per_image_nfe * 1e9) if job is not None else math.nan)
        if p["kind"] == "dirac-po":
            from diracbench.dirac.sampler import SamplerSettings, dirac_sample
            from diracbench.nn.models import build_model
            from diracbench.plan.jobs import dirac_network
            from diracbench.seeding import image_generators

            spec, _ = dirac_network(config, dataset, task)
            with torch.device(device):
                model = build_model("dirac", spec["network"], int(spec["image_size"])).eval().requires_grad_(False)
            hp = config["dirac"]["tasks"][task]["po"]
            delta = hp["delta"]

            def settings(n: int) -> SamplerSettings:
                return SamplerSettings(dt=1.0 / n, t_stop=0.0, estimator=hp["estimator"], delta=None if delta is None else min(float(delta), 1.0 / n), guidance=hp["guidance"],
                                       zeta=float(hp["zeta"]), guidance_sign=hp["guidance_sign"], output=hp["output"])

            gens = lambda: image_generators(range(batch), device=device)  # noqa: E731
            dirac_sample(model, problem.family, noise, problem.y, gens(), settings(1))
            _peak_reset(device)
            result = {}
            seconds = _timed(lambda: result.update(r=dirac_sample(model, problem.family, noise, problem.y, gens(), settings(steps))), device)
            timed_nfe = int(result["r"][1])
            params = sum(t.numel() for t in model.parameters())
            label = f"dirac unet ch{spec['network']['model_channels']}"
            return _row(config_name, job, what + f" (guidance {hp['guidance']})", label, params, batch, timed_nfe, seconds, device, (job.gflop_per_image_nfe * 1e9) if job is not None else math.nan)
        if p["kind"] == "lpips":
            lpips_model, trunk = _random_lpips(device)
            x_hat = problem.y.clamp(0, 1)
            size = int(x.shape[-1])
            from diracbench.metrics.perceptual import upsample_factor

            k = upsample_factor(size, int(config["metrics"]["lpips_upsample_below"]))

            def score() -> None:
                with torch.no_grad():
                    a = torch.nn.functional.interpolate(x_hat, scale_factor=k, mode="bilinear") if k > 1 else x_hat
                    b = torch.nn.functional.interpolate(x, scale_factor=k, mode="bilinear") if k > 1 else x
                    lpips_model(a * 2 - 1, b * 2 - 1)
                    trunk(a).mean(dim=(2, 3))
                    trunk(b).mean(dim=(2, 3))

            score()
            _peak_reset(device)
            seconds = min(_timed(score, device) for _ in range(max(1, steps // 2)))
            params = sum(t.numel() for t in trunk.parameters())
            # The planned metrics job is a CPU job and includes FID where enabled; the timed work is
            # the VGG part (LPIPS of both images, FD-VGG features of both), 4 VGG passes per image.
            fid = " (plan includes FID)" if config["metrics"].get("fid") else ""
            return _row(config_name, job, what + f" (LPIPS-VGG + FD-VGG features){fid}", "vgg16 (random init)", params, batch, 1, seconds, device, math.nan)
        raise ValueError(p["kind"])
    except (torch.OutOfMemoryError, RuntimeError, ValueError) as err:
        return _failed(config_name, job, what, batch, err)
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _random_lpips(device: torch.device):
    """LPIPS v0.1 (VGG) and the FD-VGG trunk with random backbones: the same work as the real ones."""
    import warnings

    import lpips
    import torchvision.models as tvm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device(device):
            model = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
            trunk = tvm.vgg.make_layers(tvm.vgg.cfgs["D"], batch_norm=False)[:30]
    return model.to(device).eval().requires_grad_(False), trunk.to(device).eval().requires_grad_(False)


def run_sampling_check(device: torch.device, configs: list[Path], tiny: bool, steps: int, threads: int) -> list[dict]:
    from diracbench.plan import plan

    rows = []
    for path in configs:
        config = load_config(path)
        jobs = plan(config, strict=False)
        for p in points(config, jobs, tiny):
            print(f"sampling {path.stem}: {p['kind']} {p['task']} at batch {p['batch']} ...", flush=True)
            rows.append(measure_point(config, path.stem, p, device, steps, threads))
    return rows


def plan_estimate(configs: list[Path], tiny: bool, steps: int) -> float:
    from diracbench.plan import plan

    total = 0.0
    for path in configs:
        config = load_config(path)
        total += estimate_seconds(config, plan(config, strict=False), tiny, steps)
    return total


def _num(value, digits: int) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(v) else f"{v:.{digits}f}"


def format_sampling(rows: list[dict], header: str) -> str:
    lines = [
        header, "", "Sampling and scoring at the planner's batch sizes (random weights; per image extrapolated from the timed NFEs to the job's NFE per image):", "",
    ]
    columns = ["config", "job", "what", "network", "params M", "batch", "timed NFE", "s", "NFE / image", "measured s / image", "planned s / image", "planned / measured",
               "TFLOP/s measured", "TFLOP/s planned", "peak GiB", "planned GiB", "job h measured", "job h planned", "status"]
    cells = [[r["config"], r["job"], r["what"], r["network"], _num(r["params_m"], 1), r["batch"], _num(r["timed_nfe"], 0), _num(r["seconds"], 2), _num(r["nfe_per_image"], 1),
              _num(r["measured_s_per_image"], 3), _num(r["planned_s_per_image"], 3), _num(r["planned_over_measured"], 2), _num(r["measured_tflops"], 1),
              _num(r["planned_tflops"], 1), _num(r["peak_memory_gib"], 1), _num(r["planned_memory_gib"], 1), _num(r["measured_job_hours"], 2),
              _num(r["planned_job_hours"], 2), r["status"]] for r in rows]
    lines += markdown_table(columns, cells, "llll" + "r" * 14 + "l")
    return "\n".join(lines)


def default_configs(tiny: bool) -> list[Path]:
    if tiny:
        return [TINY_CONFIG]
    return [p for p in PRESETS if p.is_file()]


__all__ = ["COLUMNS", "default_configs", "format_sampling", "plan_estimate", "run_sampling_check"]

