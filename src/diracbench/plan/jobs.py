"""The jobs of a configuration's DAG and what each costs: pure arithmetic on the config.

Every heavy job is described by the network it evaluates (a spec that `plan.count` builds on the
meta device), how many times it evaluates it (images x NFE, grid points, steps), whether each
evaluation also runs a backward pass, and where it runs (the GPU rules' device or CPU threads).
The network figures come from a `counter(spec, modes, bf16)` callable, so this module imports no
torch and tests can count however they like.

Costs not modelled (all small next to the networks at paper scale, and documented as such): the
degradation operators inside samplers, trajectory logging, loading weights, data I/O beyond
decoding in prepare_data, and measure/figure/table jobs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from diracbench.errors import UserError

# Execution settings of the `cluster:` section; defaults describe one NVIDIA A100-SXM4-80GB.
# Peaks from NVIDIA's A100 datasheet: 312 TFLOP/s dense bf16 tensor-core, 156 TFLOP/s TF32
# (PyTorch runs fp32 convolutions as TF32 on Ampere by default), 19.5 TFLOP/s plain fp32.
# Sustained figures assume ~1/3 of the bf16 peak for training the conv U-Nets (67.7M-parameter
# base net: 225k steps x 32 images x 1.6 TFLOP = 1.15e19 FLOP in ~30 A100-hours, the figure issue
# 11 quotes) and ~1/4 of the TF32 peak for fp32 sampling at small batches, where GroupNorm,
# SiLU and attention (not tensor-core work) weigh more. CPU: 40 GFLOP/s per core, measured here
# as LPIPS-VGG scoring at ~48 GFLOP/s on one thread of a 2-core Xeon VM.
DEFAULT_CLUSTER: dict[str, Any] = {
    "device": "gpu",
    "name": "A100-SXM4-80GB",
    "memory_gib": 80.0,
    "memory_headroom": 0.9,
    "tflops_bf16": 100.0,
    "tflops_fp32": 40.0,
    "cpu_gflops_per_thread": 40.0,
    "max_walltime_min": 2880,
    "gpus_per_node": 4,
    "walltime_margin": 1.5,
    "startup_min": 5.0,
    "shard_size": {},
}
SHARDABLE = ("dirac-po", "dirac-do", "dps", "ddrm", "pnp-admm", "admm-tv")
SHARDABLE_TUNING = ("tune_dps", "tune_ddrm")  # grid tuning split between sampler batches (diracbench.tune_shards)
DECODE_IMAGES_PER_S_PER_THREAD = 50.0  # PNG/JPEG decode + resize + hash of a 256 px image
CPU_THREADS = {"prepare_data": 2, "metrics": 1}  # fixed in their rules; every other non-training job: job_threads()
HOST_BASE_MB = 3000  # Python, torch/JAX, CUDA context on the host
STREAMING_WINDOW_MB = 1000  # prepare_data streams images to disk: a bounded window of decoded images, whatever the split size


def job_threads(config: dict) -> int:
    """Threads of every job but data preparation, training and metrics (config `job_threads`)."""
    return int(config.get("job_threads", 1))


def train_threads(execution: dict) -> int:
    """A training job's threads: execution.threads, else 2 CPUs for one process and 4 per process
    under torchrun (each rank gets threads / processes for torch; its DataLoader workers share them)."""
    processes = int(execution.get("processes", 1))
    return int(execution.get("threads") or 0) or (2 if processes == 1 else 4 * processes)


Counter = Callable[[dict, tuple, bool], dict]


class PlanError(UserError):
    """A job that cannot run on the configured cluster; the message names the setting to change."""


@dataclass
class Job:
    rule: str  # the Snakemake rule (tune_/sample_ with the method name as in the config)
    dataset: str
    task: str = ""
    tag: str = ""  # dt of a Dirac model, variant, ...
    device: str = "gpu"  # gpu (the GPU rules' device) or cpu
    threads: int = 1
    network: str = ""
    params: int = 0
    gflop_per_image_nfe: float = 0.0  # forward (+ backward where the job needs it) per image and NFE
    act_mib_per_image: float = 0.0  # bytes saved for backward per image (0: no backward)
    peak_mib_per_image: float = 0.0  # peak working memory per image
    fixed_mib: float = 0.0  # weights (+ gradients, Adam, EMA for training) and batch-independent buffers
    nfe_per_image: float = 0.0
    images: int = 0  # images (or images x grid points, or training samples) the job evaluates
    batch_size: int = 0  # the method's/trainer's batch
    micro_batch: int = 0  # the largest batch that fits the device memory (0: not a GPU job)
    memory_gib: float = 0.0  # planned device memory at min(batch, micro_batch)
    tflop: float = 0.0
    hours: float = 0.0  # device-hours (GPU jobs) or wall hours on `threads` CPU threads
    batches: int = 1
    shards: int = 1
    walltime_min: float = 0.0  # per shard, margin and start-up included
    restarts: int = 0  # training jobs longer than the walltime resume this many times
    host_mem_mb: int = HOST_BASE_MB
    processes: int = 1  # data-parallel training processes (one GPU each): wall time is hours / processes
    note: str = ""

    @property
    def name(self) -> str:
        parts = [self.dataset, self.task, self.tag]
        return f"{self.rule}[{'/'.join(p for p in parts if p)}]"

    def row(self) -> dict:
        out = asdict(self)
        out["job"] = self.name
        return out


def cluster_settings(config: dict) -> dict:
    """The cluster section with every default filled in."""
    cluster = {**DEFAULT_CLUSTER, **(config.get("cluster") or {})}
    cluster["shard_size"] = {**DEFAULT_CLUSTER["shard_size"], **(cluster.get("shard_size") or {})}
    return cluster


# ----------------------------------------------------------------------------------------------
# How many images each split holds (known from the config and the protocols' fixed sizes)

_PROTOCOL_SIZES = {("celeba_hq", "train"): 24000, ("celeba_hq", "val"): 3000, ("celeba_hq", "test"): 3000, ("imagenet", "all"): 1_281_167, ("imagenet", "first"): 1000, ("imagenet", "last"): 1000}


def split_size(dataset: dict, split: str) -> int | None:
    """Images of one split; None when only reading the data would tell (photo tiles, plain folders)."""
    source = dataset["source"]
    if source["kind"] == "photos":
        return source["limits"].get(split)
    spec = source[split]
    known = None
    if spec["protocol"] == "ffhq":
        known = 1000 * len(spec["subfolders"])  # FFHQ folders hold 1000 images each
    elif (spec["protocol"], spec.get("part")) in _PROTOCOL_SIZES:
        known = _PROTOCOL_SIZES[(spec["protocol"], spec.get("part"))]
    limit = spec.get("limit")
    if known is None:
        return limit
    return min(known, limit) if limit else known


def _capped(n: int | None, cap: int | None) -> int:
    n = 0 if n is None else int(n)
    return min(n, int(cap)) if cap else n


# ----------------------------------------------------------------------------------------------
# Numbers of network evaluations


def dirac_nfe(dt: float, t_stop: float | str) -> int:
    """NFE of one Dirac run, as SamplerSettings.nfe; t_stop 'tune' plans the worst case (t_stop 0)."""
    steps = round(1.0 / float(dt))
    stop = 0.0 if isinstance(t_stop, str) else float(t_stop)
    for i in range(steps):
        if i == steps - 1 or (steps - i - 1) / steps < stop - 1e-9:
            return i + 1
    return steps


def ddrm_nfe(num_timesteps: int, steps: int) -> int:
    return len(range(0, num_timesteps, max(1, num_timesteps // steps)))


def grid_points(grid: dict, vectorised: tuple[str, ...] | None = None) -> int:
    keys = grid if vectorised is None else [k for k in grid if k in vectorised]
    return math.prod(len(grid[k]) for k in keys) if keys else 1


def _max_iter(cfg: dict, task: str) -> int:
    grid = cfg["grid"].get(task, {})
    return int(max(grid["maxiter"])) if "maxiter" in grid else int(cfg["hparams"]["maxiter"])


# ----------------------------------------------------------------------------------------------
# Network specs (see plan.count.build_network)


def dirac_network(config: dict, dataset: str, task: str) -> tuple[dict, dict]:
    training = {**config["training"], **config["dirac"]["tasks"][task].get("training", {})}
    return {"kind": "dirac", "network": training["network"], "image_size": config["datasets"][dataset]["image_size"]}, training


def prior_network(config: dict, dataset: str) -> dict:
    pre = config["prior"]["pretrained"].get(dataset)
    size = config["datasets"][dataset]["image_size"]
    if pre:
        return {"kind": "pretrained", "format": pre["format"], "image_size": size}
    return {"kind": "ddpm", "network": config["training"]["network"], "image_size": size}


def _net_label(spec: dict) -> str:
    if spec["kind"] == "pretrained":
        return spec["format"]
    if spec["kind"] in ("dirac", "ddpm"):
        n = spec["network"]
        return f"{spec['kind']} unet ch{n['model_channels']} x{'-'.join(map(str, n['channel_mult']))}"
    return spec["kind"]


def metric_size(config: dict, dataset: str) -> int:
    size = config["datasets"][dataset]["image_size"]
    return size * 2 if size < config["metrics"]["lpips_upsample_below"] else size


# ----------------------------------------------------------------------------------------------
# The jobs


def build_jobs(config: dict, counter: Counter) -> list[Job]:
    cluster = cluster_settings(config)
    methods = list(config["methods"])
    jobs: list[Job] = []
    gpu = cluster["device"]
    for ds, dcfg in sorted(config["datasets"].items()):
        sizes = {s: split_size(dcfg, s) for s in ("train", "val", "test")}
        px = 3 * dcfg["image_size"] ** 2
        largest = max(v or 0 for v in sizes.values())
        known = sum(v or 0 for v in sizes.values())
        jobs.append(Job("prepare_data", ds, device="cpu", threads=CPU_THREADS["prepare_data"], images=known, hours=known / (DECODE_IMAGES_PER_S_PER_THREAD * CPU_THREADS["prepare_data"]) / 3600,
                        host_mem_mb=HOST_BASE_MB + STREAMING_WINDOW_MB, note="" if all(sizes.values()) else "some split sizes are known only after reading the data"))
        if ds not in config["prior"]["pretrained"] and any(m in methods for m in ("dps", "ddrm")):
            spec = prior_network(config, ds)
            jobs.append(_train_job(config, counter, "train_prior", ds, "", "", spec, config["training"]))
        for task in sorted(config["tasks"]):
            jobs.extend(_task_jobs(config, counter, cluster, ds, task, sizes, methods))
    for job in jobs:
        _finish(job, cluster, gpu, job_threads(config))
    return jobs


def _train_job(config: dict, counter: Counter, rule: str, ds: str, task: str, tag: str, spec: dict, training: dict) -> Job:
    cluster = cluster_settings(config)
    # The trainer autocasts with `bf16` on CUDA and with `cpu_bf16` on a CPU.
    bf16 = bool(training.get("bf16") if cluster["device"] == "gpu" else training.get("cpu_bf16"))
    figures = counter(spec, ("train",), bf16)
    f = figures["train"]
    params = figures["params"]
    # fp32 weights, gradients and Adam's two moments (+ an EMA copy): 16 (20) bytes per parameter.
    state = params * (20 if training.get("ema_decay") else 16)
    steps, batch = int(training["steps"]), int(training["batch_size"])
    execution = training.get("execution") or {}
    processes = int(execution.get("processes", 1))
    return Job(rule, ds, task, tag, threads=train_threads(execution), processes=processes, network=_net_label(spec), params=params, gflop_per_image_nfe=f["flops"] / 1e9, act_mib_per_image=f["saved_bytes"] / 2**20,
               peak_mib_per_image=f["peak_bytes"] / 2**20, fixed_mib=(state + f["fixed_bytes"]) / 2**20, nfe_per_image=1, images=steps * batch, batch_size=batch,
               host_mem_mb=HOST_BASE_MB + int(3 * state / 2**20), note=f"{steps} steps x batch {batch}" + (", bf16 autocast" if bf16 else ""))


def _sampling_job(config: dict, counter: Counter, rule: str, ds: str, task: str, tag: str, spec: dict, images: int, nfe: float, backward: bool, batch: int, note: str = "") -> Job:
    mode = "input_grad" if backward else "infer"
    figures = counter(spec, (mode,), False)
    f = figures[mode]
    params = figures["params"]
    return Job(rule, ds, task, tag, network=_net_label(spec), params=params, gflop_per_image_nfe=f["flops"] / 1e9, act_mib_per_image=f["saved_bytes"] / 2**20 if backward else 0.0,
               peak_mib_per_image=f["peak_bytes"] / 2**20, fixed_mib=(4 * params + f["fixed_bytes"]) / 2**20, nfe_per_image=nfe, images=images, batch_size=batch,
               host_mem_mb=HOST_BASE_MB + int(2 * 4 * params / 2**20 + 2 * images * 3 * int(spec.get("image_size", 0)) ** 2 * 4 / 2**20), note=note)


def _task_jobs(config: dict, counter: Counter, cluster: dict, ds: str, task: str, sizes: dict, methods: list[str]) -> list[Job]:
    jobs: list[Job] = []
    size = config["datasets"][ds]["image_size"]
    sched = config["tasks"][task]["schedule"]
    job = Job("schedule", ds, task, device="cpu", threads=job_threads(config), note=f"kind {sched['kind']}")
    if sched["kind"] == "greedy" and sched.get("metric") == "lpips":
        vgg = counter({"kind": "vgg16", "image_size": metric_size(config, ds)}, ("infer",), False)
        job.network, job.params = "vgg16 (LPIPS)", vgg["params"]
        job.gflop_per_image_nfe = 2 * vgg["infer"]["flops"] / 1e9
        job.images, job.nfe_per_image = int(sched["n_images"]) * int(sched["grid_size"]), 1
    jobs.append(job)
    dcfg = config["dirac"]
    variants = [m.split("-", 1)[1] for m in methods if m in ("dirac-po", "dirac-do")]
    if variants:
        tcfg = dcfg["tasks"][task]
        spec, training = dirac_network(config, ds, task)
        for dt in tcfg["look_aheads"]:
            jobs.append(_train_job(config, counter, "train_dirac", ds, task, f"dt{float(dt):g}", spec, training))
        n_val = _capped(sizes["val"], dcfg["tuning"]["max_images"])
        from diracbench.methods.dirac_tuning import candidates, run_key

        groups = {}  # one full reverse run per distinct sampler setting of the search (t_stop, output read off it)
        for v in ("po", "do"):
            for hp in candidates(tcfg[v], (tcfg.get("search") or {}).get(v, {})):
                groups.setdefault(run_key(hp), hp)
        evals = sum(n_val * dirac_nfe(hp["dt"], 0.0) for hp in groups.values())
        guided = any(hp["guidance"] != "none" for hp in groups.values())
        jobs.append(_sampling_job(config, counter, "tune_dirac", ds, task, "", spec, evals, 1, guided, int(dcfg["sampling"]["batch_size"]), f"{len(groups)} full reverse run(s) of {n_val} val images"))
        n_test = _capped(sizes["test"], dcfg["sampling"]["max_images"])
        for v in variants:
            hp = tcfg[v]
            nfe = dirac_nfe(hp["dt"], hp["t_stop"])
            post = min(int(dcfg["sampling"]["posterior_images"]), n_test) * int(dcfg["sampling"]["posterior_samples"])
            post_stop = dcfg["sampling"]["posterior_t_stop"]
            post_nfe = dirac_nfe(hp["dt"], hp["t_stop"] if post_stop is None else post_stop)
            per_image = nfe + (post * post_nfe / n_test if n_test else 0)
            note = ("t_stop tuned: planned at t_stop 0 (upper bound)" if isinstance(hp["t_stop"], str) else f"t_stop {hp['t_stop']}") + (f", guidance {hp['guidance']}" if hp["guidance"] != "none" else "") + (f", + {post} posterior samples" if post else "")
            jobs.append(_sampling_job(config, counter, f"sample_dirac-{v}", ds, task, "", spec, n_test, per_image, hp["guidance"] != "none", int(dcfg["sampling"]["batch_size"]), note))
    prior = prior_network(config, ds)
    T = int(config["prior"]["num_timesteps"])
    if "dps" in methods:
        cfg = config["dps"]
        steps, batch = int(cfg["hparams"]["steps"]), int(cfg["hparams"]["batch_size"])
        pts = grid_points(cfg["grid"].get(task, {}))
        n_val, n_test = _capped(sizes["val"], cfg["max_images"]["val"]), _capped(sizes["test"], cfg["max_images"]["test"])
        jobs.append(_sampling_job(config, counter, "tune_dps", ds, task, "", prior, n_val * pts, steps, True, batch, f"{pts} grid points x {n_val} val images"))
        jobs.append(_sampling_job(config, counter, "sample_dps", ds, task, "", prior, n_test, steps, True, batch))
    if "ddrm" in methods:
        cfg = config["ddrm"]
        nfe, batch = ddrm_nfe(T, int(cfg["hparams"]["steps"])), int(cfg["hparams"]["batch_size"])
        pts = grid_points(cfg["grid"].get(task, {}))
        n_val, n_test = _capped(sizes["val"], cfg["max_images"]["val"]), _capped(sizes["test"], cfg["max_images"]["test"])
        jobs.append(_sampling_job(config, counter, "tune_ddrm", ds, task, "", prior, n_val * pts, nfe, False, batch, f"{pts} grid points x {n_val} val images"))
        jobs.append(_sampling_job(config, counter, "sample_ddrm", ds, task, "", prior, n_test, nfe, False, batch))
    if "pnp-admm" in methods:
        cfg = config["pnp-admm"]
        layers = 17 if cfg["hparams"]["variant"].startswith("17") else 6
        dncnn = {"kind": "dncnn", "layers": layers, "image_size": size}
        n_val, n_test = _capped(sizes["val"], cfg["max_images"]["val"]), _capped(sizes["test"], cfg["max_images"]["test"])
        pts = grid_points(cfg["grid"].get(task, {}), ("rho",))
        iters = _max_iter(cfg, task)
        for rule, n in (("tune_pnp-admm", n_val * pts), ("sample_pnp-admm", n_test)):
            job = _sampling_job(config, counter, rule, ds, task, "", dncnn, n, iters, False, int(cfg["hparams"]["batch_size"]), f"DnCNN-{cfg['hparams']['variant']} per colour channel, {iters} ADMM iterations")
            job.device, job.threads = "cpu", job_threads(config)
            jobs.append(job)
    if "admm-tv" in methods:
        cfg = config["admm-tv"]
        n_val, n_test = _capped(sizes["val"], cfg["max_images"]["val"]), _capped(sizes["test"], cfg["max_images"]["test"])
        pts = grid_points(cfg["grid"].get(task, {}), ("lam", "rho"))
        iters = _max_iter(cfg, task)
        # No network: per iteration K = [A; D] and its adjoint, with A a matrix blur (two
        # size x size matmuls per channel) or an elementwise mask, plus ~20 elementwise passes.
        a_flops = 4 * size**3 * 3 if config["tasks"][task]["operator"]["kind"] == "blur" else 3 * size**2
        gflop = (2 * a_flops + 20 * 3 * size**2) / 1e9
        for rule, n in (("tune_admm-tv", n_val * pts), ("sample_admm-tv", n_test)):
            jobs.append(Job(rule, ds, task, device="cpu", threads=job_threads(config), network="none (operator)", gflop_per_image_nfe=gflop, nfe_per_image=iters, images=n,
                            batch_size=int(cfg["hparams"]["batch_size"]), note=f"{iters} ADMM iterations"))
    jobs.extend(_metric_jobs(config, counter, ds, task, sizes, methods))
    return jobs


def _metric_jobs(config: dict, counter: Counter, ds: str, task: str, sizes: dict, methods: list[str]) -> list[Job]:
    msize = metric_size(config, ds)
    vgg = counter({"kind": "vgg16", "image_size": msize}, ("infer",), False)
    # LPIPS: both images through VGG; FD-VGG: the reconstruction (the reference's features again).
    gflop = 4 * vgg["infer"]["flops"] / 1e9
    label = "vgg16 (LPIPS, FD-VGG)"
    if config["metrics"].get("fid"):
        inc = counter({"kind": "inception", "image_size": 299}, ("infer",), False)
        gflop += 2 * inc["infer"]["flops"] / 1e9
        label += " + inception (FID)"
    out = []
    for m in methods + ["measurement"]:
        key = {"dirac-po": "dirac", "dirac-do": "dirac"}.get(m, m)
        if key == "dirac":
            n = _capped(sizes["test"], config["dirac"]["sampling"]["max_images"])
        elif key == "measurement":
            n = _capped(sizes["test"], None)
        else:
            n = _capped(sizes["test"], config[key]["max_images"]["test"])
        out.append(Job("metrics", ds, task, m, device="cpu", threads=CPU_THREADS["metrics"], network=label, params=vgg["params"], gflop_per_image_nfe=gflop, nfe_per_image=1, images=n,
                       batch_size=int(config["metrics"]["batch_size"])))
    return out


def _finish(job: Job, cluster: dict, gpu_kind: str, threads: int) -> None:
    """Throughput, memory fit, hours and walltime of one job (shards: `assign_shards`)."""
    job.tflop = job.images * job.nfe_per_image * job.gflop_per_image_nfe / 1e3
    if job.device == "gpu":
        # The GPU rules' device: an accelerator, or on a CPU machine the rule's threads (training:
        # its execution threads, set by _train_job; the others: `threads`); `tflops_fp32` (and,
        # for a cpu_bf16 training, `tflops_bf16`) describe 2 threads, so n get n/2 of the rate.
        share = 1.0
        if gpu_kind == "cpu":
            job.device, job.threads = "cpu", job.threads if job.rule.startswith("train") else threads
            share = job.threads / 2
        rate = (cluster["tflops_bf16"] if "bf16" in job.note else cluster["tflops_fp32"]) * 1e12 * share
        usable = cluster["memory_gib"] * cluster["memory_headroom"] * 2**30
        per = max(job.peak_mib_per_image, 1e-3) * 2**20
        job.micro_batch = max(0, int((usable - job.fixed_mib * 2**20) // per))
        if job.batch_size:
            # Data-parallel training splits the global batch: each device holds its share.
            job.micro_batch = min(job.micro_batch, -(-job.batch_size // job.processes))
        job.memory_gib = (job.fixed_mib * 2**20 + max(job.micro_batch, 1) * per) / 2**30
    else:
        rate = cluster["cpu_gflops_per_thread"] * 1e9 * job.threads
    job.hours = max(job.hours, job.tflop * 1e12 / rate / 3600)
    if job.batch_size and job.images:
        job.batches = int(job.images // job.batch_size) if job.rule.startswith("train") else math.ceil(job.images / job.batch_size)
    # hours are device-hours; N data-parallel processes (one device each) finish in 1/N of the time.
    job.walltime_min = walltime(job.hours / job.processes, cluster)
    if job.rule.startswith("train") and job.walltime_min > cluster["max_walltime_min"]:
        # Training saves its state and exits before the walltime; a retry resumes (see README).
        job.restarts = math.ceil(job.walltime_min / cluster["max_walltime_min"]) - 1
        job.walltime_min = float(cluster["max_walltime_min"])


def walltime(hours: float, cluster: dict) -> float:
    return hours * 60 * cluster["walltime_margin"] + cluster["startup_min"]


def batch_key(method: str) -> str:
    if method == "metrics":
        return "metrics.batch_size"
    if method.startswith("tune_"):
        return f"{method[len('tune_'):]}.hparams.batch_size"
    return "dirac.sampling.batch_size" if method.startswith("dirac") else f"{method}.hparams.batch_size"


def assign_shards(job: Job, cluster: dict) -> None:
    """Shards of a sample_<method> job, from cluster.shard_size.<method> (auto, images or null).

    Shards are whole batches of the method (so sharded results are bit-identical); a job that
    cannot fit the walltime raises PlanError naming the setting to change.
    """
    limit = float(cluster["max_walltime_min"])
    if not job.rule.startswith("sample_") and job.rule != "metrics" and job.rule not in SHARDABLE_TUNING:
        if job.walltime_min > limit and not job.rule.startswith("train"):
            raise PlanError(f"{job.name} needs {job.walltime_min:.0f} min, more than cluster.max_walltime_min {limit:.0f}, and is not sharded: {_shrink_hint(job)} or raise cluster.max_walltime_min")
        return
    # Sampling shards by method (cluster.shard_size.dps, ...), grid tuning by tune_<method>,
    # scoring by cluster.shard_size.metrics.
    method = job.rule[len("sample_"):] if job.rule.startswith("sample_") else job.rule
    setting = cluster["shard_size"].get(method, "auto")
    n_batches = max(1, job.batches)
    per_batch_h = job.hours / n_batches
    allowed_h = (limit - cluster["startup_min"]) / (60 * cluster["walltime_margin"])
    if per_batch_h > allowed_h:
        raise PlanError(f"{job.name}: one batch of {job.batch_size} images needs {walltime(per_batch_h, cluster):.0f} min, more than cluster.max_walltime_min {limit:.0f} allows even with one batch per shard; lower {batch_key(method)} or raise cluster.max_walltime_min")
    if setting is None:
        per = n_batches
    elif setting == "auto":
        per = max(1, min(n_batches, int(allowed_h // per_batch_h))) if per_batch_h > 0 else n_batches
    else:
        per = max(1, int(setting) // max(1, job.batch_size))
    job.shards = math.ceil(n_batches / per)
    job.walltime_min = walltime(per * per_batch_h, cluster)
    if job.walltime_min > limit:
        fix = "set it to auto or to fewer images"
        raise PlanError(f"{job.name}: a shard of {per} batches needs {job.walltime_min:.0f} min, more than cluster.max_walltime_min {limit:.0f}; cluster.shard_size.{method} is {setting!r}: {fix} or raise cluster.max_walltime_min")


def _shrink_hint(job: Job) -> str:
    if job.rule.startswith("tune_"):
        method = job.rule[len("tune_"):]
        key = "dirac.tuning.max_images" if method == "dirac" else f"{method}.max_images.val"
        return f"lower {key} or the grid"
    if job.rule == "metrics":
        return "score fewer images (the method's max_images.test)"
    if job.rule == "schedule":
        return f"lower tasks.{job.task}.schedule.grid_size or n_images"
    return "shrink the job"


