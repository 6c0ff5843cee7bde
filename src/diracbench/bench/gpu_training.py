"""Training at the presets' real size: steps/s and peak memory per micro-batch, with and without
activation checkpointing, and data-parallel on every visible GPU; beside the estimates made
without a GPU (saved activations and FLOPs per image).

Part of `python -m diracbench.bench gpu` (see gpu.py). Measured points, all bf16 autocast and
channels-last as the presets train, Adam, the incremental-reconstruction loss on the preset's blur:
- one GPU, micro-batch 8 and 32, activation checkpointing off and on (an OOM is a result, not a crash);
- DDP (`torchrun --nproc_per_node <GPUs>`, NCCL) at micro-batch 8 per GPU, checkpointing off.
Estimates, from one forward pass on fake tensors (torch's FakeTensorMode: shapes and dtypes only,
no memory, no arithmetic, so they run on any CPU in seconds):
- activation memory per image: the bytes of the distinct tensors autograd saves for backward
  (saved-tensor hooks), under bf16 autocast in training mode;
- FLOPs per image: FlopCounterMode's count of the forward, and of forward + backward.
Memory estimate of a step: 16 bytes per parameter (fp32 weights, gradients, two Adam moments)
plus micro-batch x activations per image; the measured peak adds the allocator's and cuDNN's
workspace on top.

`--allow-cpu --tiny` runs all of it (DDP with two gloo processes) on a tiny network on the CPU,
so the script is known to work before a GPU is at hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from diracbench.bench.machine import synchronize
from diracbench.dirac.loss import ir_loss
from diracbench.nn.models import build_model
from diracbench.nn.unet import ResBlock, count_parameters
from diracbench.operators import GaussianBlurFamily, GeometricNoise, LinearSchedule
from diracbench.textables import markdown_table

PRESET = Path(__file__).resolve().parents[3] / "workflow" / "presets" / "paper-ffhq.yaml"
ISSUE_QUOTES = {"saved_gib_per_image": "2.5-2.65", "forward_gflop_per_image": "534"}  # issue 11, measured on CPU
PAPER_STEPS, PAPER_BATCH = 225_000, 32  # the presets' training.steps and batch_size


def preset_sizes(path: Path = PRESET) -> tuple[dict, int, int]:
    """(network, image size, blur kernel size) of a preset: the sizes the paper trains at."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    size = next(iter(cfg["datasets"].values()))["image_size"]
    return cfg["training"]["network"], int(size), int(cfg["tasks"]["deblur"]["operator"]["kernel_size"])


def per_image_estimates(network: dict, image_size: int) -> dict:
    """Saved activations (GiB) and forward / forward+backward GFLOPs for one image, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter):  # weights are not activations
            st = t.untyped_storage()
            storages[st._cdata] = max(storages.get(st._cdata, 0), st.nbytes())
        return t

    with FakeTensorMode():
        # (Contiguous layout: the memory format does not change the bytes, and fake parameters cannot be re-laid.)
        model = build_model("dirac", network, image_size).train()
        params = count_parameters(model)
        x = torch.rand(1, 3, image_size, image_size)
        sigma = torch.full((1,), 0.03)
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x, sigma)
            forward = counter.get_total_flops()
            out.float().square().mean().backward()
            total = counter.get_total_flops()
    return {"params": params, "saved_gib_per_image": sum(storages.values()) / 2**30, "forward_gflop_per_image": forward / 1e9, "train_gflop_per_image": total / 1e9}


def enable_checkpointing(model: nn.Module) -> str:
    """Turn on activation checkpointing of the U-Net's residual blocks; returns how.

    Uses the U-Net's own switch (`checkpoint_blocks`, the training option) when it has one; an older
    U-Net gets each residual block's forward wrapped in torch.utils.checkpoint here.
    """
    switches = [m for m in model.modules() if hasattr(m, "checkpoint_blocks")]
    if switches:
        for m in switches:
            m.checkpoint_blocks = True
        return "on (UNet.checkpoint_blocks)"
    from torch.utils.checkpoint import checkpoint

    for block in (m for m in model.modules() if isinstance(m, ResBlock)):
        plain = block.forward

        def checkpointed(x: torch.Tensor, emb: torch.Tensor, _plain=plain) -> torch.Tensor:
            if torch.is_grad_enabled():
                return checkpoint(_plain, x, emb, use_reentrant=False)
            return _plain(x, emb)

        block.forward = checkpointed  # an instance attribute: nn.Module.__call__ finds it first
    return "on (bench wrapper)"


def train_point(network: dict, image_size: int, kernel_size: int, device: torch.device, micro_batch: int, checkpointing: bool, steps: int, warmup: int, ddp: bool = False) -> dict:
    """Time `steps` bf16 training steps at one micro-batch; peak memory of this process's device."""
    torch.manual_seed(0)
    model = build_model("dirac", network, image_size).to(device).to(memory_format=torch.channels_last).train()
    how = enable_checkpointing(model) if checkpointing else "off"
    net: nn.Module = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    family = GaussianBlurFamily((image_size, image_size), kernel_size, LinearSchedule(0.3, 3.0), device=device)
    noise = GeometricNoise(0.01, 0.05)
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand(micro_batch, 3, image_size, image_size, device=device, generator=gen).contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = ir_loss(net, x0, gen, family, noise, dt=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    row = {"micro_batch": micro_batch, "checkpointing": how, "steps": steps, "status": "ok", "seconds": math.nan, "steps_per_s": math.nan, "peak_gib": math.nan}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        for _ in range(warmup):
            step()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        row["seconds"] = time.perf_counter() - start
        row["steps_per_s"] = steps / row["seconds"]
    except torch.cuda.OutOfMemoryError:
        row["status"] = "OOM"
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del opt, net, model, x0
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _ddp_worker(argv: list[str]) -> None:
    """One torchrun rank: a DDP training point; rank 0 writes what all ranks measured."""
    import torch.distributed as dist

    p = argparse.ArgumentParser()
    p.add_argument("--spec", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    spec = json.loads(a.spec.read_text())
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    cuda = spec["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        row = train_point(spec["network"], spec["image_size"], spec["kernel_size"], device, spec["micro_batch"], False, spec["steps"], spec["warmup"], ddp=True)
        mine = torch.tensor([row["seconds"] if row["status"] == "ok" else math.inf, row["peak_gib"] if cuda else 0.0], dtype=torch.float64, device=device)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace; the fullest GPU the memory
        if rank == 0:
            seconds = float(mine[0])
            ok = math.isfinite(seconds)
            result = {**row, "ranks": world, "status": "ok" if ok else "OOM", "seconds": seconds if ok else math.nan,
                      "steps_per_s": spec["steps"] / seconds if ok else math.nan, "peak_gib": float(mine[1]) if cuda else math.nan}
            a.out.write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def ddp_point(network: dict, image_size: int, kernel_size: int, device: torch.device, ranks: int, micro_batch: int, steps: int, warmup: int, threads: int) -> dict:
    """torchrun --nproc_per_node `ranks` of _ddp_worker; the measured row, or one saying what failed."""
    with tempfile.TemporaryDirectory(prefix="diracbench-ddp-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"network": network, "image_size": image_size, "kernel_size": kernel_size, "device": device.type,
                                    "micro_batch": micro_batch, "steps": steps, "warmup": warmup, "threads": threads}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "diracbench.bench.gpu_training", "--ddp-worker", "--spec", str(spec), "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads))}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"micro_batch": micro_batch, "checkpointing": "off", "steps": steps, "ranks": ranks, "status": f"failed: {tail[0][:200]}",
                    "seconds": math.nan, "steps_per_s": math.nan, "peak_gib": math.nan}
        return json.loads(out.read_text())


def run_training_check(device: torch.device, tiny: bool, steps: int, warmup: int, threads: int, network: dict, image_size: int, kernel_size: int) -> tuple[list[dict], dict]:
    micro_batches = (2, 4) if tiny else (8, 32)
    ranks = torch.cuda.device_count() if device.type == "cuda" else 2  # CPU smoke: two gloo ranks
    rows = []
    for mb in micro_batches:
        for ckpt in (False, True):
            print(f"training micro-batch {mb}, checkpointing {'on' if ckpt else 'off'} ...", flush=True)
            rows.append({"ranks": 1, **train_point(network, image_size, kernel_size, device, mb, ckpt, steps, warmup)})
    print(f"training DDP on {ranks} {'GPUs' if device.type == 'cuda' else 'CPU processes'}, micro-batch {micro_batches[0]} per rank ...", flush=True)
    rows.append(ddp_point(network, image_size, kernel_size, device, ranks, micro_batches[0], steps, warmup, threads))
    print("estimating activations and FLOPs per image on fake tensors ...", flush=True)
    estimates = per_image_estimates(network, image_size)
    for r in rows:
        images = r["micro_batch"] * r["ranks"]
        r["images_per_s"] = r["steps_per_s"] * images
        recompute = estimates["forward_gflop_per_image"] if r["checkpointing"] != "off" else 0.0
        r["achieved_tflops"] = r["images_per_s"] * (estimates["train_gflop_per_image"] + recompute) / 1e3 / r["ranks"]  # per device
        # Checkpointing keeps only block inputs, which the fake-tensor pass does not single out: no estimate.
        r["estimated_gib"] = 16 * estimates["params"] / 2**30 + r["micro_batch"] * estimates["saved_gib_per_image"] if r["checkpointing"] == "off" else math.nan
        # Device-hours for the presets' 225k steps at global batch 32 at this throughput.
        r["gpu_hours_per_model"] = PAPER_STEPS * PAPER_BATCH / r["images_per_s"] / 3600 * r["ranks"] if r["images_per_s"] > 0 else math.nan
    return rows, estimates


def _num(value: float, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_training(rows: list[dict], estimates: dict, header: str) -> str:
    e = estimates
    lines = [
        header, "",
        "Estimates without a GPU (fake tensors; per image, bf16 autocast, training mode):", "",
        *markdown_table(["quantity", "this script", "issue 11 (CPU, saved-tensor hooks / FlopCounterMode)"], [
            ["parameters", f"{e['params']:,}", "67.7M"],
            ["activations saved for backward", f"{e['saved_gib_per_image']:.3g} GiB", f"{ISSUE_QUOTES['saved_gib_per_image']} GiB"],
            ["forward FLOPs", f"{e['forward_gflop_per_image']:.4g} GFLOP", f"{ISSUE_QUOTES['forward_gflop_per_image']} GFLOP"],
            ["forward + backward FLOPs", f"{e['train_gflop_per_image']:.4g} GFLOP", "-"],
        ], "lrr"),
        "",
        "Measured training steps (bf16, channels-last, Adam); estimated memory = 16 B/parameter + micro-batch x activations:", "",
    ]
    columns = ["ranks", "micro-batch", "checkpointing", "status", "steps/s", "images/s", "peak GiB (per device)", "estimated GiB", "TFLOP/s per device",
               "device-hours for 225k steps x 32"]
    cells = [[r["ranks"], r["micro_batch"], r["checkpointing"], r["status"], _num(r["steps_per_s"], 2), _num(r["images_per_s"], 1), _num(r["peak_gib"], 1),
              _num(r["estimated_gib"], 3), _num(r["achieved_tflops"], 3), _num(r["gpu_hours_per_model"], 1)] for r in rows]
    lines += markdown_table(columns, cells, "rrll" + "r" * 6)
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ddp-worker"]:
        _ddp_worker(sys.argv[2:])
    else:
        raise SystemExit("internal module: run `python -m diracbench.bench gpu`")
