"""Counting network forward and backward passes with hooks, whatever builds the network.

The methods load their networks inside `reconstruct`, so the counter cannot hook one instance in
advance. It installs global module hooks instead and counts only *outermost* module calls (a call
made while no other module is running): the denoiser or prior itself, never its sub-layers. Each
outermost output that carries a gradient gets a tensor hook, so every backward pass through the
network (DPS's gradient through the prior, Dirac's guidance) is counted when it happens, not
assumed. Counts are in images: a forward pass on a batch of 8 counts 8.

The hooks cost a few microseconds per module call, well under 1% of a network evaluation.
Networks outside torch (scico's DnCNN runs in JAX) are invisible to them; the cost table says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules import module as _module


def _batch_of(value) -> int:
    if torch.is_tensor(value):
        return int(value.shape[0]) if value.ndim else 1
    if isinstance(value, (tuple, list)) and value:
        return _batch_of(value[0])
    return 0


def _grad_tensor(value) -> torch.Tensor | None:
    if torch.is_tensor(value):
        return value if value.requires_grad else None
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _grad_tensor(item)
            if found is not None:
                return found
    return None


@dataclass
class NetworkCounter:
    """Use as a context manager; `forward_images` / `backward_images` count image passes."""

    forward_calls: int = 0
    forward_images: int = 0
    backward_calls: int = 0
    backward_images: int = 0
    networks: Counter = field(default_factory=Counter)  # class name -> outermost calls
    _depth: int = 0
    _handles: list = field(default_factory=list)

    def __enter__(self) -> "NetworkCounter":
        self._handles = [
            _module.register_module_forward_pre_hook(self._pre),
            _module.register_module_forward_hook(self._post),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._depth = 0

    def _pre(self, module: nn.Module, args) -> None:
        self._depth += 1

    def _post(self, module: nn.Module, args, output) -> None:
        self._depth -= 1
        if self._depth != 0:
            return
        n = _batch_of(output)
        self.forward_calls += 1
        self.forward_images += n
        self.networks[type(module).__name__] += 1
        out = _grad_tensor(output)
        if out is not None:
            out.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward_calls += 1
        self.backward_images += _batch_of(grad)

    def summary(self) -> dict:
        return {
            "forward_calls": self.forward_calls,
            "forward_images": self.forward_images,
            "backward_calls": self.backward_calls,
            "backward_images": self.backward_images,
            "networks": ";".join(sorted(self.networks)),
        }
