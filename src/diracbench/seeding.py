"""Stable seeds derived from strings, and one random generator per image.

Seeds come from SHA-256 of the parts (never Python's salted `hash`), so they are the same in
every process, on every machine. Giving each image its own `torch.Generator` makes image i's
result independent of batch size and of how images are split across jobs.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import torch


def seed_from_string(*parts: object) -> int:
    """A 63-bit seed from the string forms of `parts`."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)


def image_generators(seeds: Iterable[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def randn_per_image(shape: Sequence[int], generators: Sequence[torch.Generator], device=None, dtype=torch.float32) -> torch.Tensor:
    """A (B, ...) normal tensor whose row i is drawn from generators[i] alone."""
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for batch {shape[0]}")
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generators]
    out = torch.stack(rows)
    return out if device is None else out.to(device)
