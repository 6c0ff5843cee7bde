"""The GPU check: training and sampling throughput of the paper-size network at 256x256.

`python -m diracbench.bench gpu` builds the paper's "base" U-Net (67.7M parameters at 256 px,
random weights: throughput does not depend on them), and for each combination of precision
(fp32, bf16 autocast) and memory format (contiguous, channels-last) measures
- training: Adam steps of the incremental-reconstruction loss (dt = 1) on a blur family with the
  paper's 61-tap kernel, images/s;
- sampling: Dirac reverse-process steps (one network evaluation and the incremental
  reconstruction each) under `torch.inference_mode`, images/s;
and the peak GPU memory of each. Optionally `--compile` adds torch.compile'd variants. It prints a
table (and writes it as CSV with --out). Then the training table of gpu_training.py: the presets'
bf16 training at micro-batch 8 and 32 with and without activation checkpointing, DDP through
torchrun on every visible GPU, beside the per-image activation and FLOP estimates made without a
GPU (<out>_training.csv). Then the sampling table of gpu_sampling.py: DPS and DDRM on the presets'
priors (SDEdit DDPM, ADM) at 256 px, Dirac guided sampling and LPIPS/FD-VGG scoring, at the
planner's batch sizes, beside the planner's estimates (<out>_sampling.csv). Nothing in the
workflow depends on it.

Without CUDA it refuses (exit 1) — CPU numbers must never pass for GPU numbers — unless run as
`--allow-cpu --tiny`, a smoke test of this code path on a tiny network whose table says so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from diracbench.bench.machine import machine_info, synchronize
from diracbench.dirac.loss import ir_loss
from diracbench.dirac.sampler import SamplerSettings, dirac_sample
from diracbench.nn.models import build_model
from diracbench.nn.unet import count_parameters
from diracbench.operators import GaussianBlurFamily, GeometricNoise, LinearSchedule
from diracbench.seeding import image_generators
from diracbench.textables import markdown_table

PAPER_BASE = {"model_channels": 128, "channel_mult": [1, 1, 2, 2, 2, 2, 2], "num_blocks": 2, "attn_resolutions": [16], "dropout": 0.1}
TINY = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
COLUMNS = ["mode", "precision", "channels_last", "compiled", "batch_size", "steps", "seconds", "images_per_s", "peak_memory_mb"]


class _Autocast(nn.Module):
    """Runs only the network under bf16 autocast; the operators around it stay float32."""

    def __init__(self, model: nn.Module, enabled: bool, device_type: str) -> None:
        super().__init__()
        self.model, self.enabled, self.device_type = model, enabled, device_type

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.enabled):
            return self.model(y, sigma).float()


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def measure(network: dict, image_size: int, kernel_size: int, device: torch.device, train_batch: int, sample_batch: int, steps: int, warmup: int, bf16: bool, channels_last: bool, compiled: bool) -> list[dict]:
    torch.manual_seed(0)
    model = build_model("dirac", network, image_size).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net: nn.Module = torch.compile(model) if compiled else model
    family = GaussianBlurFamily((image_size, image_size), kernel_size, LinearSchedule(0.3, 3.0), device=device)
    noise = GeometricNoise(0.01, 0.05)
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand(train_batch, 3, image_size, image_size, device=device, generator=gen).contiguous(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    label = {"precision": "bf16" if bf16 else "fp32", "channels_last": channels_last, "compiled": compiled}
    rows = []

    def train_step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = ir_loss(net, x0, gen, family, noise, dt=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    _peak_reset(device)
    for _ in range(warmup):
        train_step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    synchronize(device)
    seconds = time.perf_counter() - start
    rows.append({"mode": "train", **label, "batch_size": train_batch, "steps": steps, "seconds": seconds, "images_per_s": train_batch * steps / seconds, "peak_memory_mb": _peak(device)})
    del opt

    model.eval()
    sampler_net = _Autocast(net, bf16, device.type)
    y = torch.rand(sample_batch, 3, image_size, image_size, device=device, generator=gen).contiguous(memory_format=fmt)
    settings = lambda n: SamplerSettings(dt=1.0 / n, t_stop=0.0, estimator="look_ahead", delta=None, guidance="none", zeta=0.0, guidance_sign="descent", output="x0_hat")
    _peak_reset(device)
    with torch.inference_mode():
        dirac_sample(sampler_net, family, noise, y, image_generators(range(sample_batch), device=device), settings(max(1, warmup)))
        synchronize(device)
        start = time.perf_counter()
        dirac_sample(sampler_net, family, noise, y, image_generators(range(sample_batch), device=device), settings(steps))
        synchronize(device)
        seconds = time.perf_counter() - start
    rows.append({"mode": "sample", **label, "batch_size": sample_batch, "steps": steps, "seconds": seconds, "images_per_s": sample_batch * steps / seconds, "peak_memory_mb": _peak(device)})
    return rows


def format_table(table: pd.DataFrame, header: str) -> str:
    columns = ["mode", "precision", "channels-last", "compiled", "batch", "steps", "s", "images/s (per step)", "peak GPU MB"]
    rows = [[r["mode"], r["precision"], "on" if r["channels_last"] else "off", "yes" if r["compiled"] else "no", r["batch_size"], r["steps"], f"{r['seconds']:.2f}",
             f"{r['images_per_s']:.1f}", f"{r['peak_memory_mb']:.0f}"] for _, r in table.iterrows()]
    return "\n".join([header, "", *markdown_table(columns, rows, "llll" + "r" * 5)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-cpu", action="store_true", help="with --tiny: run the code path on CPU as a smoke test (numbers labelled CPU)")
    parser.add_argument("--tiny", action="store_true", help="a tiny network at 16 px instead of the paper's 67.7M network at 256 px")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 50; 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; 1 with --tiny)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default 16; 2 with --tiny)")
    parser.add_argument("--sample-batch", type=int, default=None, help="sampling batch (default 32; 2 with --tiny)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd networks")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV (the training table goes to <out>_training.csv)")
    parser.add_argument("--skip-throughput", action="store_true", help="leave out the precision x memory-format throughput table")
    parser.add_argument("--skip-training", action="store_true", help="leave out the micro-batch / checkpointing / DDP training table")
    parser.add_argument("--training-steps", type=int, default=None, help="timed steps per training point (default 10; 2 with --tiny)")
    parser.add_argument("--skip-sampling", action="store_true", help="leave out the sampling/scoring table (DPS, DDRM, Dirac guided, LPIPS at the planner's batch sizes)")
    parser.add_argument("--sampling-steps", type=int, default=None, help="timed steps (NFEs) per sampling point (default 5; 2 with --tiny)")
    parser.add_argument("--sampling-config", action="append", type=Path, default=None, help="config(s) whose jobs the sampling table times (default: both paper presets; tests/configs/tiny.yaml with --tiny)")
    parser.add_argument("--preset", type=Path, default=None, help="the preset whose network, image size and blur kernel the paper-size runs use (default workflow/presets/paper-ffhq.yaml)")


def run_gpu_check(args: argparse.Namespace) -> int:
    from diracbench.io import atomic_path

    cuda = torch.cuda.is_available()
    if not cuda and not (args.allow_cpu and args.tiny):
        print("diracbench.bench gpu: no CUDA GPU is visible to torch, so there is nothing to measure here; run it on a machine "
              "with a GPU (a CPU smoke test of the code path: --allow-cpu --tiny)", flush=True)
        return 1
    if args.allow_cpu and not args.tiny and not cuda:
        print("diracbench.bench gpu: --allow-cpu needs --tiny (the paper-size network on a CPU is not a GPU measurement)", flush=True)
        return 1
    device = torch.device("cuda" if cuda else "cpu")
    network, size, kernel = (TINY, 16, 9) if args.tiny else _paper_sizes(args.preset)
    steps = args.steps or (2 if args.tiny else 50)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    train_batch = args.train_batch or (2 if args.tiny else 16)
    sample_batch = args.sample_batch or (2 if args.tiny else 32)
    params = count_parameters(build_model("dirac", network, size))
    info = machine_info(device)
    where = f"GPU {info['gpu']}" if cuda else f"CPU SMOKE TEST ({info['cpu']}, {info['torch_threads']} threads) - NOT GPU NUMBERS"
    header = f"diracbench GPU check: {params:,}-parameter network at {size}x{size} on {where}; torch {info['torch']}; {info['date']}"
    print(_estimated_total(args, network, size, steps, warmup, train_batch, sample_batch), flush=True)
    if not args.skip_throughput:
        rows = []
        combos = [(bf16, cl, False) for bf16 in (False, True) for cl in (False, True)]
        if args.compile:
            combos += [(bf16, True, True) for bf16 in (False, True)]
        for bf16, cl, compiled in combos:
            print(f"measuring {'bf16' if bf16 else 'fp32'}, channels-last {'on' if cl else 'off'}{', compiled' if compiled else ''} ...", flush=True)
            rows += measure(network, size, kernel, device, train_batch, sample_batch, steps, warmup, bf16, cl, compiled)
        table = pd.DataFrame(rows, columns=COLUMNS)
        print(format_table(table, header), flush=True)
        if args.out is not None:
            with atomic_path(args.out) as tmp:
                table.assign(device=where).to_csv(tmp, index=False)
    if not args.skip_training:
        from diracbench.bench.gpu_training import format_training, run_training_check

        training_steps = args.training_steps or (2 if args.tiny else 10)
        rows, estimates = run_training_check(device, args.tiny, training_steps, warmup if args.tiny else max(warmup, 3), args.threads, network, size, kernel)
        print(format_training(rows, estimates, header), flush=True)
        if args.out is not None:
            with atomic_path(args.out.with_name(args.out.stem + "_training.csv")) as tmp:
                pd.DataFrame(rows).assign(device=where, **{f"estimate_{k}": v for k, v in estimates.items()}).to_csv(tmp, index=False)
    if not args.skip_sampling:
        from diracbench.bench.gpu_sampling import format_sampling, run_sampling_check

        rows = run_sampling_check(device, _sampling_configs(args), args.tiny, _sampling_steps(args), args.threads)
        print(format_sampling(rows, header), flush=True)
        if args.out is not None:
            from diracbench.bench.gpu_sampling import COLUMNS as SAMPLING_COLUMNS

            with atomic_path(args.out.with_name(args.out.stem + "_sampling.csv")) as tmp:
                pd.DataFrame(rows, columns=SAMPLING_COLUMNS).assign(device=where).to_csv(tmp, index=False)
    return 0


def _sampling_configs(args: argparse.Namespace) -> list[Path]:
    from diracbench.bench.gpu_sampling import default_configs

    configs = args.sampling_config or default_configs(args.tiny)
    missing = [str(p) for p in configs if not Path(p).is_file()]
    if missing or not configs:
        raise SystemExit(f"diracbench.bench gpu: no config for the sampling table ({', '.join(missing) or 'none found'}); pass --sampling-config FILE or --skip-sampling")
    return list(configs)


def _sampling_steps(args: argparse.Namespace) -> int:
    return args.sampling_steps or (2 if args.tiny else 5)


def _estimated_total(args: argparse.Namespace, network: dict, size: int, steps: int, warmup: int, train_batch: int, sample_batch: int) -> str:
    """A rough wall-time forecast of the parts that will run, from FLOP counts and A100-class
    sustained throughput (the planner's defaults), so a GPU session can be sized before it starts."""
    from diracbench.plan.jobs import DEFAULT_CLUSTER

    parts = []
    if not args.skip_throughput or not args.skip_training:
        from diracbench.bench.gpu_training import per_image_estimates

        est = per_image_estimates(network, size)
        bf16, fp32 = DEFAULT_CLUSTER["tflops_bf16"] * 1e12, DEFAULT_CLUSTER["tflops_fp32"] * 1e12
        if not args.skip_throughput:
            combos = 4 + (2 if args.compile else 0)
            work = (steps + warmup) * (train_batch * est["train_gflop_per_image"] + sample_batch * est["forward_gflop_per_image"]) * 1e9
            per_precision = work / fp32 + work / bf16  # one fp32 and one bf16 combination per memory format (and compiled)
            parts.append(("throughput", combos / 2 * per_precision + combos * (3 if args.tiny else 10) + (60 * args.compile)))
        if not args.skip_training:
            training_steps = args.training_steps or (2 if args.tiny else 10)
            work = sum((training_steps + 3) * mb * est["train_gflop_per_image"] * 1e9 for mb in (8, 8, 32, 32)) if not args.tiny else 0.0
            parts.append(("training", work / bf16 + (20 if args.tiny else 60) + 30))  # start-up per point, torchrun
    if not args.skip_sampling:
        from diracbench.bench.gpu_sampling import plan_estimate

        parts.append(("sampling", plan_estimate(_sampling_configs(args), args.tiny, _sampling_steps(args))))
    total = sum(s for _, s in parts)
    detail = ", ".join(f"{name} ~{s / 60:.1f} min" for name, s in parts)
    return f"estimated total: ~{total / 60:.1f} min on an A100-class GPU ({detail}; planner throughput, plus start-up)"


def _paper_sizes(preset: Path | None) -> tuple[dict, int, int]:
    """The preset's network, image size and kernel; the built-in paper values without a checkout."""
    from diracbench.bench.gpu_training import PRESET, preset_sizes

    path = preset or PRESET
    if path.is_file():
        return preset_sizes(path)
    if preset is not None:
        raise SystemExit(f"diracbench.bench gpu: --preset {preset} does not exist")
    return PAPER_BASE, 256, 61
