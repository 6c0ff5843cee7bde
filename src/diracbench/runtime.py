"""Threads and devices: a rule's `threads:` drives torch's intra-op pool, nothing more."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from diracbench.errors import UserError

if TYPE_CHECKING:
    import torch

_configured = False


def configure_threads(threads: int) -> None:
    """Use exactly `threads` CPU threads for torch and the BLAS/OpenMP pools.

    Stages that never import torch (figures, tables) only set the environment, which torch
    would read at import; importing torch here would cost them a second of start-up.
    """
    global _configured
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" not in sys.modules:
        return
    import torch

    torch.set_num_threads(threads)
    if not _configured:
        try:
            torch.set_num_interop_threads(1)  # inter-op parallelism would oversubscribe the cores
        except RuntimeError:
            pass  # already started parallel work in this process
        _configured = True


def resolve_device(name: str = "auto") -> "torch.device":
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} was requested but torch sees no CUDA GPU; use --device auto or cpu")
    return dev


def device_description(device: "torch.device") -> str:
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()} threads"
