"""What produced a resume state, and whether the code of today would have produced the same.

A training run that spans days must survive harmless edits (a log line, a progress bar, plumbing)
yet never continue a state with code that trains a different function. Hashing the source files
cannot tell the two apart, so the state records, besides the digest of the training code, a
numerical *fingerprint* of one training step, computed from the state's own weights:

- the loss on a fixed probe batch (the first two training images, loss draws from a fixed seed),
  which covers the network, the loss, the operators and the uint8 -> float conversion;
- the gradient norm of that loss, which covers backward;
- sum |delta| and sum delta^2 of the weights (and EMA weights) after one update with that gradient,
  applied to a copy with a copy of the optimiser state, which covers clipping, Adam and the EMA;
- a digest of the next two global batches' indices, which covers the data order.

The probe runs in float32 with TF32 and cuDNN autotuning off, on a copy of the model, and leaves
the training state untouched. On resume, an unchanged code digest resumes at once; a changed one
recomputes the fingerprint with the current code and resumes only when every number agrees within
PROBE_RTOL (relative) and the batch digest is equal. Anything else is a change of the trained
function: the policy (`--on-code-change`, env DIRACBENCH_ON_CODE_CHANGE) decides between refusing
(default), resuming anyway, and starting over.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

# Same code on the same device reproduces the probe to ~1e-7 (other thread counts, other cuDNN
# algorithms); an edit that changes the trained function moves it far more. Documented in README.
PROBE_RTOL = 1e-4
PROBE_IMAGES = 2
PROBE_SEED = 20240611
POLICIES = ("refuse", "resume", "restart")


def code_digest(loss_module: Any) -> str:
    """SHA-256 of the training code: nn/, training/ and the loss module."""
    import diracbench.nn as nn_pkg
    import diracbench.training as training_pkg

    h = hashlib.sha256()
    for pkg in (nn_pkg, training_pkg):
        for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    h.update(Path(inspect.getfile(loss_module)).read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def _exact_math(device: torch.device):
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def fingerprint(
    model: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    loss_fn: Any,
    probe_images: torch.Tensor,
    update: Callable[[nn.Module, torch.optim.Optimizer, nn.Module | None], None],
    next_batches: list[np.ndarray],
) -> dict[str, Any]:
    """The numbers described in the module docstring (model: the plain module, not DDP)."""
    device = next(model.parameters()).device
    probe_model = copy.deepcopy(model).train()
    for p in probe_model.parameters():
        p.grad = None
    probe_ema = None if ema is None else copy.deepcopy(ema)
    probe_opt = type(optimizer)(probe_model.parameters(), **optimizer.defaults)
    probe_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    before = [p.detach().clone() for p in probe_model.parameters()]
    ema_before = None if probe_ema is None else [p.detach().clone() for p in probe_ema.parameters()]
    gen = torch.Generator(device=device).manual_seed(PROBE_SEED)
    x0 = probe_images.to(device)
    with _exact_math(device), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(PROBE_SEED)  # dropout
        if hasattr(loss_fn, "draw"):
            loss = loss_fn.compute(probe_model, x0, loss_fn.draw(tuple(x0.shape), gen))
        else:
            loss = loss_fn(probe_model, x0, gen)
        loss.backward()
        grad_sq = sum(float(p.grad.double().pow(2).sum()) for p in probe_model.parameters() if p.grad is not None)
        update(probe_model, probe_opt, probe_ema)
    deltas = [(p.detach().double() - b.double()) for p, b in zip(probe_model.parameters(), before)]
    out = {
        "loss": float(loss.detach()),
        "grad_norm": math.sqrt(grad_sq),
        "update_abs": float(sum(d.abs().sum() for d in deltas)),
        "update_sq": float(sum(d.pow(2).sum() for d in deltas)),
        "ema_update_abs": 0.0,
        "batches": hashlib.sha256(b"".join(np.asarray(b, dtype=np.int64).tobytes() for b in next_batches)).hexdigest(),
    }
    if probe_ema is not None:
        out["ema_update_abs"] = float(sum((p.detach().double() - b.double()).abs().sum() for p, b in zip(probe_ema.parameters(), ema_before)))
    return out


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Human-readable list of fingerprint entries that disagree (empty: same trained function)."""
    out = []
    for key, old in saved.items():
        new = now.get(key)
        if isinstance(old, str) or isinstance(new, str):
            if old != new:
                out.append(f"{key} differs")
        elif new is None or not math.isclose(float(old), float(new), rel_tol=PROBE_RTOL, abs_tol=1e-12):
            out.append(f"{key} {old:.6g} -> {new if new is None else format(new, '.6g')}")
    return out
