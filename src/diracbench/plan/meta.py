"""What one network costs (the torch side of plan.count), counted on the meta device: no weights, no memory, no GPU.

For a network spec (see `network_spec` in `diracbench.plan.jobs`) this builds the module with
`torch.device("meta")` and runs it at batch sizes 1 and 2; every figure is the difference of the
two runs, so per-image costs come out without the batch-independent parts (weights, cached
casts, the timestep embedding's constant work).

- FLOPs: `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add) of the forward,
  of forward + backward to the input only (DPS, guided Dirac: frozen weights) and of forward +
  backward with weight gradients (training).
- Activation memory: the bytes autograd saves for backward (`saved_tensors_hooks`, each storage
  counted once), the classic "activations per image" figure.
- Peak memory: a dispatch-level tracker adds the bytes of every new tensor storage and subtracts
  them when the tensor dies; its peak over a no-grad forward (inference), a forward + backward to
  the input, and a training forward + backward is what the micro-batch must fit.
- bf16: CUDA autocast does not act on meta tensors, so `_AutocastEmulation` applies its rule at
  the function level: convolutions, linear layers, matmuls and attention run in bf16,
  normalisations and softmax in fp32, everything else in its inputs' type.

Counting a 67.7M-parameter network at 256 px takes a few seconds, so results are cached per
spec, in-process and (optionally) in a JSON file shared between Snakemake invocations.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from diracbench.errors import UserError

_LOW = {F.conv1d, F.conv2d, F.conv_transpose2d, F.linear, torch.matmul, torch.mm, torch.bmm, torch.baddbmm, torch.addmm, F.scaled_dot_product_attention, torch.Tensor.matmul, torch.Tensor.__matmul__}
_FP32 = {F.group_norm, F.layer_norm, F.softmax, F.log_softmax, torch.softmax, torch.Tensor.softmax, torch.exp, torch.Tensor.exp, torch.pow, torch.Tensor.pow, torch.norm, torch.linalg.vector_norm}


def _cast(args: Any, dtype: torch.dtype) -> Any:
    if isinstance(args, torch.Tensor):
        return args.to(dtype) if args.is_floating_point() and args.dtype != dtype else args
    if isinstance(args, (list, tuple)):
        return type(args)(_cast(a, dtype) for a in args)
    if isinstance(args, dict):
        return {k: _cast(v, dtype) for k, v in args.items()}
    return args


class _AutocastEmulation(TorchFunctionMode):
    """CUDA bf16 autocast's casting rule, for tensors (meta) that real autocast ignores."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOW:
            args, kwargs = _cast(args, torch.bfloat16), _cast(kwargs, torch.bfloat16)
        elif func in _FP32:
            args, kwargs = _cast(args, torch.float32), _cast(kwargs, torch.float32)
        return func(*args, **kwargs)


class _LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage alive at once: +size when an op makes a new tensor, -size when it dies."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            # Views and in-place results share an input's storage: no new memory.
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                n = t.untyped_storage().nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out


def build_network(spec: dict) -> nn.Module:
    """The network of a spec on the meta device (see plan.jobs.network_spec for the kinds)."""
    kind = spec["kind"]
    with torch.device("meta"):
        if kind in ("dirac", "ddpm"):
            from diracbench.nn.models import build_model

            return build_model(kind, spec["network"], int(spec["image_size"]))
        if kind == "pretrained":
            from diracbench.prior.pretrained import pretrained_format

            return pretrained_format(spec["format"]).build()
        if kind == "dncnn":
            return _dncnn(int(spec["layers"]), int(spec.get("width", 64)))
        if kind == "vgg16":
            from torchvision.models import vgg16

            return vgg16(weights=None).features
        if kind == "inception":
            from torchvision.models import inception_v3

            return inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    raise UserError(f"planner: unknown network kind {kind!r}")


def _dncnn(layers: int, width: int) -> nn.Module:
    """scico's DnCNN layout (conv-ReLU, then conv-BN-ReLU blocks, a last conv) on one channel."""
    mods: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
    for _ in range(layers - 2):
        mods += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    mods.append(nn.Conv2d(width, 1, 3, padding=1))
    return nn.Sequential(*mods).eval()


def _call(model: nn.Module, spec: dict, x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    if spec["kind"] in ("dirac", "ddpm", "pretrained"):
        return model(x, torch.ones(b, device=x.device))
    if spec["kind"] == "dncnn":
        return model(x.reshape(b * x.shape[1], 1, *x.shape[2:]))
    return model(x)


def _input(spec: dict, batch: int) -> torch.Tensor:
    size = int(spec["image_size"])
    return torch.zeros(batch, int(spec.get("channels", 3)), size, size, device="meta")


def _measure(spec: dict, batch: int, mode: str, bf16: bool) -> dict:
    """One meta run at `batch`: mode 'infer' (no grad), 'input_grad' (frozen weights, gradient
    to the input), or 'train' (weight gradients)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_network(spec)
    model.requires_grad_(mode == "train")
    if mode == "train" and spec["kind"] in ("dirac", "ddpm"):
        model.train()
    x = _input(spec, batch).requires_grad_(mode == "input_grad")
    saved: dict[int, int] = {}
    keep: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if not isinstance(base, nn.Parameter):
            keep.append(base)  # keeps ids unique while counting
            saved[id(base)] = base.untyped_storage().nbytes()
        return t

    live = _LiveBytes()
    cast = _AutocastEmulation() if bf16 else None
    with FlopCounterMode(display=False) as fwd_counter, live:
        if cast is not None:
            cast.__enter__()
        try:
            if mode == "infer":
                with torch.no_grad():
                    out = _call(model, spec, x)
                flops_fwd = fwd_counter.get_total_flops()
                flops_total = flops_fwd
            else:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    out = _call(model, spec, x)
                flops_fwd = fwd_counter.get_total_flops()
                out.float().square().mean().backward()
                flops_total = fwd_counter.get_total_flops()
        finally:
            if cast is not None:
                cast.__exit__(None, None, None)
        del out
    return {"flops_fwd": flops_fwd, "flops": flops_total, "saved": sum(saved.values()), "peak": live.peak, "params": sum(p.numel() for p in model.parameters())}




def count_modes(spec: dict, modes: tuple[str, ...], bf16: bool) -> dict:
    """Per-image figures for each mode: the difference of runs at batch 2 and batch 1."""
    result: dict[str, Any] = {}
    for mode in modes:
        one, two = _measure(spec, 1, mode, bf16), _measure(spec, 2, mode, bf16)
        result["params"] = one["params"]
        result[mode] = {
            "flops_fwd": two["flops_fwd"] - one["flops_fwd"],
            "flops": two["flops"] - one["flops"],
            "saved_bytes": max(0, two["saved"] - one["saved"]),
            "peak_bytes": max(0, two["peak"] - one["peak"]),
            # Batch-independent part of the peak (weights' casts, parameter gradients) beyond the weights.
            "fixed_bytes": max(0, 2 * one["peak"] - two["peak"]),
        }
    return result
