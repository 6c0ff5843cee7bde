"""One resumable training loop for every model diracbench trains (Dirac models, the DDPM prior).

A model-specific loss is a callable `loss_fn(model, x0, generator) -> scalar loss`; this loop
owns everything else: data order, Adam, optional EMA, bf16 autocast and channels-last on CUDA,
progress and loss logging, and resumable state.

Resumable state (model, optimiser, EMA, step, data order, every RNG state, the log so far) lives
in `state_dir`, an undeclared folder keyed by a hash of the settings — Snakemake deletes a
rule's declared outputs before rerunning it, so the resume state must not be one of them. It is
written every `checkpoint_every` steps, on SIGTERM (what SLURM sends before a kill), and when the
time budget is nearly spent; the latter two stop the run with `TrainingInterrupted` (exit status
75), so a retry resumes it. A rerun after any interruption, even SIGKILL, ends with exactly the
weights of an uninterrupted run on the same CPU, because every source of randomness is restored.
"""

from __future__ import annotations

import copy
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from diracbench.errors import UserError
from diracbench.io import atomic_path, write_json
from diracbench.progress import progress

LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
STATE_FILE = "state.pt"
INTERRUPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", which is what a retry does


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int
    lr: float
    ema_decay: float | None
    grad_clip: float | None
    checkpoint_every: int
    log_every: int
    seed: int
    bf16: bool
    channels_last: bool

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSettings":
        missing = sorted(set(cls.__dataclass_fields__) - set(data))
        if missing:
            raise UserError(f"training settings lack {missing}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class TrainingInterrupted(Exception):
    """Stopped early on purpose (SIGTERM or time budget) with the state saved."""


class NonFiniteLoss(UserError):
    pass


@dataclass
class TrainResult:
    state_dict: dict
    ema_state_dict: dict | None
    log: list[dict]
    seconds: float
    resumed_from: int


class _StopFlag:
    """Turns SIGTERM into a flag the loop checks between steps (never mid-update)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def __enter__(self) -> "_StopFlag":
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling possible
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _rng_states(gens: dict[str, torch.Generator]) -> dict:
    states = {name: g.get_state() for name, g in gens.items()}
    states["torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(gens: dict[str, torch.Generator], states: dict) -> None:
    for name, g in gens.items():
        g.set_state(states[name])
    torch.set_rng_state(states["torch_cpu"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


class _BatchOrder:
    """Epoch-wise shuffled indices drawn from a dedicated generator."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.gen = n, generator
        self.perm = torch.randperm(n, generator=generator)
        self.pos = 0

    def next(self, batch: int) -> np.ndarray:
        out = []
        while batch > 0:
            if self.pos >= self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
            take = min(batch, self.n - self.pos)
            out.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            batch -= take
        return torch.cat(out).numpy()


def train(
    model: nn.Module,
    loss_fn: LossFn,
    images: np.ndarray,
    settings: TrainSettings,
    state_dir: str | Path,
    device: torch.device,
    time_budget_s: float | None = None,
    description: str = "train",
) -> TrainResult:
    """Train `model` on uint8 (N, C, H, W) `images`; resume from `state_dir` when it holds state."""
    if len(images) == 0:
        raise UserError("the training split is empty; check the dataset configuration")
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / STATE_FILE
    cuda = device.type == "cuda"
    model = model.to(device)
    if cuda and settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if settings.ema_decay else None
    gens = {"data": torch.Generator().manual_seed(settings.seed), "loss": torch.Generator(device=device).manual_seed(settings.seed + 1)}
    torch.manual_seed(settings.seed + 2)  # dropout draws from the global generator
    order = _BatchOrder(len(images), gens["data"])
    step, log, elapsed_before = 0, [], 0.0
    window_loss, window_steps = 0.0, 0  # running mean of the loss between two log rows

    if state_path.is_file():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise UserError(f"resume state {state_path} is unreadable ({err.__class__.__name__}); delete {state_dir} to start this training afresh") from None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        _restore_rng(gens, state["rng"])
        order.perm, order.pos = state["order_perm"], state["order_pos"]
        step, log, elapsed_before = state["step"], state["log"], state["elapsed"]
        window_loss, window_steps = state["window"]
        print(f"resuming {description} from step {step} ({state_path})", flush=True)
    write_json(state_dir / "settings.json", asdict(settings))
    resumed_from = step

    # Losses not yet read back to the host: one device sync per log row (or checkpoint), not one
    # per step. A non-finite loss is still reported with its own step number, and state is never
    # saved past it (every save reads the pending losses first).
    pending: list[torch.Tensor] = []

    def drain() -> None:
        nonlocal window_loss, window_steps
        if not pending:
            return
        values = torch.stack([p.float() for p in pending]).tolist()
        first = step - len(pending)
        pending.clear()
        for k, value in enumerate(values):
            if not np.isfinite(value):
                done = first + k  # steps completed before the bad one
                raise NonFiniteLoss(f"non-finite training loss ({value}) at step {done + 1} of {description}; lower the learning rate or check the data (resume state from step {done - done % settings.checkpoint_every} is kept in {state_dir})")
            window_loss += value
            window_steps += 1

    def save_state() -> None:
        drain()
        record = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ema": None if ema is None else ema.state_dict(),
            "rng": _rng_states(gens),
            "order_perm": order.perm,
            "order_pos": order.pos,
            "step": step,
            "log": log,
            "window": (window_loss, window_steps),
            "elapsed": elapsed_before + (time.perf_counter() - start),
        }
        with atomic_path(state_path) as tmp:
            torch.save(record, tmp)

    start = time.perf_counter()
    margin = min(300.0, max(20.0, 0.05 * time_budget_s)) if time_budget_s else 0.0
    deadline = start + time_budget_s - margin if time_budget_s else None
    window_start = time.perf_counter()
    bar = progress(total=settings.steps, desc=description, unit="step")
    bar.update(step)
    with _StopFlag() as stop:
        while step < settings.steps:
            idx = np.sort(order.next(settings.batch_size))
            x0 = torch.from_numpy(np.asarray(images[idx], dtype=np.float32) / 255.0).to(device)
            if cuda and settings.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda and settings.bf16):
                loss = loss_fn(model, x0, gens["loss"])
            pending.append(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    for p_ema, p in zip(ema.parameters(), model.parameters()):
                        p_ema.lerp_(p, 1.0 - settings.ema_decay)
                    for b_ema, b in zip(ema.buffers(), model.buffers()):
                        b_ema.copy_(b)
            step += 1
            bar.update(1)
            if step % settings.log_every == 0 or step == settings.steps:
                drain()
                now = time.perf_counter()
                rate = window_steps * settings.batch_size / max(now - window_start, 1e-9)
                log.append({"step": step, "loss": window_loss / window_steps, "images_per_s": rate, "elapsed_s": elapsed_before + now - start})
                bar.set_postfix(loss=f"{window_loss / window_steps:.4g}", img_s=f"{rate:.1f}")
                window_loss, window_start, window_steps = 0.0, now, 0
            if step % settings.checkpoint_every == 0 and step < settings.steps:
                save_state()
            if stop.raised or (deadline is not None and time.perf_counter() > deadline and step < settings.steps):
                save_state()
                bar.close()
                why = "SIGTERM" if stop.raised else f"time budget of {time_budget_s:.0f}s nearly spent"
                raise TrainingInterrupted(f"{description} stopped at step {step}/{settings.steps} ({why}); state saved in {state_dir}; rerun to resume")
    bar.close()
    seconds = elapsed_before + time.perf_counter() - start
    return TrainResult(
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        ema_state_dict=None if ema is None else {k: v.detach().cpu() for k, v in ema.state_dict().items()},
        log=log,
        seconds=seconds,
        resumed_from=resumed_from,
    )
