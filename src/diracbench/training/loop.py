"""One resumable training loop for every model diracbench trains (Dirac models, the DDPM prior).

A model-specific loss is a callable `loss_fn(model, x0, generator) -> scalar loss`; this loop
owns everything else: data order, Adam with an optional warm-up and cosine decay of the learning
rate, optional EMA, bf16 autocast (CUDA, and the CPU when asked), channels-last on CUDA, progress
and loss logging, and resumable state.

Resumable state (model, optimiser, EMA, step, data order, every RNG state, the log so far) lives
in `state_dir`, an undeclared folder keyed by a hash of the settings and the data — Snakemake deletes a
rule's declared outputs before rerunning it, so the resume state must not be one of them. It is
written every `checkpoint_every` steps, on SIGTERM (what SLURM sends before a kill), and when the
time budget is nearly spent; the latter two stop the run with `TrainingInterrupted` (exit status
75), so a retry resumes it. A rerun after any interruption, even SIGKILL, ends with exactly the
weights of an uninterrupted run on the same CPU, because every source of randomness is restored.

The state holds tensors, numbers and strings only and is read with `torch.load(weights_only=True)`:
a pickle planted at its (predictable) path cannot run code. It also records what produced it
(training.producer); a resume with edited code continues only when the edit leaves the trained
function unchanged, or when the user says so.

Data parallelism (`torchrun`, training.distributed): every rank draws the same global batch order
and the same loss randomness, trains on its slice, DDP averages the gradients, and rank 0 alone
writes the state. The stop decision (SIGTERM or time budget) is all-reduced every step, so all
ranks save and stop after the same step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from diracbench.errors import UserError
from diracbench.io import atomic_path, write_json
from diracbench.progress import progress
from diracbench.training import producer
from diracbench.training.batches import BatchOrder, StepBatches, next_global_batch, rank_slice, to_float
from diracbench.training.distributed import Group

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
    # Keys added after the first release: absent ones keep the old behaviour (constant rate, fp32 on CPU).
    lr_warmup_steps: int = 0
    lr_decay: str = "constant"
    cpu_bf16: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSettings":
        optional = {"lr_warmup_steps", "lr_decay", "cpu_bf16"}
        missing = sorted(set(cls.__dataclass_fields__) - optional - set(data))
        if missing:
            raise UserError(f"training settings lack {missing}")
        settings = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if settings.lr_decay not in LR_DECAYS:
            raise UserError(f"training.lr_decay {settings.lr_decay!r} is not one of {list(LR_DECAYS)}")
        return settings


LR_DECAYS = ("constant", "cosine")


def lr_at(step: int, settings: TrainSettings) -> float:
    """Learning rate of update number `step` (0-based): linear warm-up, then constant or cosine
    decay to zero at the last step. A pure function of the step, so a resumed run needs no
    scheduler state."""
    factor = min(1.0, (step + 1) / settings.lr_warmup_steps) if settings.lr_warmup_steps else 1.0
    if settings.lr_decay == "cosine":
        factor *= 0.5 * (1.0 + math.cos(math.pi * step / settings.steps))
    return settings.lr * factor


@dataclass(frozen=True)
class Execution:
    """How a run is executed; none of it changes the result beyond float tolerance (README).

    micro_batch: images per forward/backward on one process (None: its whole share of the global
    batch); smaller values accumulate gradients over several passes. activation_checkpointing:
    recompute each U-Net block in backward instead of storing its activations. data_workers:
    DataLoader worker processes (0 reads in the training process). on_code_change: what to do
    when the resume state was produced by code that trains a different function (producer.py).
    """

    micro_batch: int | None = None
    activation_checkpointing: bool = False
    data_workers: int = 0
    on_code_change: str = "refuse"


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

    def ignore_from_now(self) -> None:
        """Until the loop exits (the CLI keeps ignoring while it exits with status 75)."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _NoBar:
    """The progress bar of ranks other than 0 (one bar per run in the log)."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _rng_states(gens: dict[str, torch.Generator], group: Group, device: torch.device) -> dict:
    # The loss generator is identical on every rank (same seed, same global draws); the global
    # generators (dropout) are per rank and gathered to rank 0.
    states: dict[str, Any] = {name: g.get_state() for name, g in gens.items()}
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    everyone = group.gather(mine)
    if everyone is not None:
        states["torch_cpu"] = [r["cpu"] for r in everyone]
        if device.type == "cuda":
            states["torch_cuda"] = [r["cuda"] for r in everyone]
    return states


def _restore_rng(gens: dict[str, torch.Generator], states: dict, group: Group, device: torch.device, seed: int, step: int) -> None:
    for name, g in gens.items():
        g.set_state(states[name])
    cpu = states["torch_cpu"]
    if group.rank < len(cpu):
        torch.set_rng_state(cpu[group.rank])
    else:  # resumed on more processes than saved the state: a fresh, rank-specific stream
        torch.manual_seed(_global_seed(seed, group.rank) + step)
    if device.type == "cuda" and "torch_cuda" in states and group.rank < len(states["torch_cuda"]):
        torch.cuda.set_rng_state(states["torch_cuda"][group.rank], device)


def _global_seed(seed: int, rank: int) -> int:
    return seed + 2 + 1_000_003 * rank  # rank 0: seed + 2, as the one-process run has always used


def _set_checkpointing(model: nn.Module, on: bool) -> None:
    for m in model.modules():
        if hasattr(m, "checkpoint_blocks"):
            m.checkpoint_blocks = on


def apply_update(model: nn.Module, optimizer: torch.optim.Optimizer, ema: nn.Module | None, settings: TrainSettings) -> None:
    """Clip, Adam step, EMA: everything between backward and the next step."""
    if settings.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    if ema is not None:
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1.0 - settings.ema_decay)
            for b_ema, b in zip(ema.buffers(), model.buffers()):
                b_ema.copy_(b)


def micro_ranges(share: int, micro_batch: int | None) -> list[tuple[int, int]]:
    """[lo, hi) of each forward/backward pass within one process's share of a batch."""
    size = share if not micro_batch or micro_batch >= share else micro_batch
    return [(lo, min(lo + size, share)) for lo in range(0, share, size)]


def accumulate_gradients(train_model: nn.Module, loss_fn: Any, x: torch.Tensor, draws: tuple[torch.Tensor, ...], rank_lo: int, chunks: list[tuple[int, int]], batch_size: int, group: Group, autocast: dict) -> torch.Tensor:
    """Backward of one step's passes over this process's images `x`; returns its share of the
    global mean loss (detached). `draws` cover the whole global batch; this process's images
    start at `rank_lo` in it."""
    total = None
    for k, (lo, hi) in enumerate(chunks):
        part = tuple(d[rank_lo + lo : rank_lo + hi] for d in draws)
        # DDP all-reduces on the last pass only; it averages over ranks, so each pass's mean
        # loss is weighted by its share of the global batch times the number of ranks.
        sync = k == len(chunks) - 1 or not group.distributed
        with contextlib.nullcontext() if sync else train_model.no_sync():
            with torch.autocast(**autocast):
                loss = loss_fn.compute(train_model, x[lo:hi], part)
            (loss * ((hi - lo) * group.world / batch_size)).backward()
        piece = loss.detach() * ((hi - lo) / batch_size)
        total = piece if total is None else total + piece
    return total


def _order_from(n: int, snap: dict) -> BatchOrder:
    order = BatchOrder.__new__(BatchOrder)
    order.n, order.gen = n, torch.Generator()
    order.restore(snap)
    return order


def _probe(model, ema, optimizer, loss_fn, images, order_snap, settings: TrainSettings) -> dict:
    order = _order_from(len(images), order_snap)
    upcoming = [next_global_batch(order, settings.batch_size) for _ in range(2)]
    probe_x = to_float(images, np.arange(min(producer.PROBE_IMAGES, len(images))))
    return producer.fingerprint(model, ema, optimizer, loss_fn, probe_x, lambda m, o, e: apply_update(m, o, e, settings), upcoming)


def _decide(state: dict, state_path: Path, code: str, policy: str, model, ema, loss_fn, images, settings: TrainSettings) -> str:
    """'resume' or 'restart' for a state made by other code; raises UserError to refuse."""
    made_by = state["producer"]
    if made_by["code"] == code:
        return "resume"
    m = copy.deepcopy(model)
    m.load_state_dict(state["model"])
    opt = torch.optim.Adam(m.parameters(), lr=settings.lr)
    opt.load_state_dict(state["optimizer"])
    e = None
    if ema is not None:
        e = copy.deepcopy(ema)
        e.load_state_dict(state["ema"])
    now = _probe(m, e, opt, loss_fn, images, state["order"], settings)
    del m, opt, e
    diff = producer.differences(made_by["fingerprint"], now)
    if not diff:
        print(f"the training code changed since step {state['step']} was saved, but not the trained function (probe step reproduced to {producer.PROBE_RTOL:g}); resuming", flush=True)
        return "resume"
    if policy == "refuse":
        raise UserError(
            f"resume state {state_path} (step {state['step']}) was made by training code that trains a different function "
            f"({'; '.join(diff)}); rerun with --on-code-change resume (continue those weights with the new code) or restart "
            f"(discard them), e.g. DIRACBENCH_ON_CODE_CHANGE=resume"
        )
    print(f"the training code changed the trained function since step {state['step']} was saved ({'; '.join(diff)}); on-code-change={policy}: {'continuing those weights with the new code' if policy == 'resume' else 'starting over from step 0'}", flush=True)
    return policy


def train(
    model: nn.Module,
    loss_fn: LossFn,
    images: np.ndarray,
    settings: TrainSettings,
    state_dir: str | Path,
    device: torch.device,
    time_budget_s: float | None = None,
    description: str = "train",
    execution: Execution = Execution(),
    group: Group = Group(),
    identity: dict[str, str] | None = None,
    code: str | None = None,
    after_step: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train `model` on uint8 (N, C, H, W) `images`; resume from `state_dir` when it holds state.

    `after_step(step, model)` runs after every update (validation curves: bench recipe); it must
    leave the model's mode and every random generator as it found them.

    `identity` (data digest, kind, ...) is stored in the state and must match on resume; `code`
    is the training-code digest (producer.code_digest) recorded with the fingerprint.
    """
    if len(images) == 0:
        raise UserError("the training split is empty; check the dataset configuration")
    if execution.on_code_change not in producer.POLICIES:
        raise UserError(f"on-code-change {execution.on_code_change!r} is not one of {list(producer.POLICIES)}")
    if settings.batch_size % group.world:
        raise UserError(f"training.batch_size {settings.batch_size} is not divisible by the {group.world} training processes; choose a process count that divides it")
    identity = dict(identity or {})
    code = code or "unknown"
    state_dir = Path(state_dir)
    if group.leader:
        state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / STATE_FILE
    cuda = device.type == "cuda"
    model = model.to(device)
    if cuda and settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _set_checkpointing(model, execution.activation_checkpointing)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if settings.ema_decay else None
    gens = {"loss": torch.Generator(device=device).manual_seed(settings.seed + 1)}
    torch.manual_seed(_global_seed(settings.seed, group.rank))  # dropout draws from the global generator
    order = BatchOrder(len(images), torch.Generator().manual_seed(settings.seed))
    step, log, elapsed_before = 0, [], 0.0
    window_loss, window_steps = 0.0, 0  # running mean of the loss between two log rows

    if group.broadcast(state_path.is_file()):
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
            raise UserError(f"resume state {state_path} is unreadable or not plain tensors ({err.__class__.__name__}: {first}); it was not loaded; delete {state_dir} to start this training afresh") from None
        if not isinstance(state, dict) or state.get("identity") != identity:
            raise UserError(f"resume state {state_path} belongs to other data or settings (its record {state.get('identity') if isinstance(state, dict) else None} != {identity}); delete {state_dir}")
        decision = None
        if group.leader:
            try:
                decision = _decide(state, state_path, code, execution.on_code_change, model, ema, loss_fn, images, settings)
            except UserError as err:
                decision = f"error:{err}"
        decision = group.broadcast(decision)
        if decision.startswith("error:"):
            raise UserError(decision[len("error:"):])
        if decision == "resume":
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            order.restore(state["order"])
            _restore_rng(gens, state["rng"], group, device, settings.seed, state["step"])
            step, log, elapsed_before = state["step"], state["log"], state["elapsed"]
            window_loss, window_steps = state["window"]
            if group.leader:
                print(f"resuming {description} from step {step} ({state_path})", flush=True)
        elif group.leader:  # restart: the old state must not be found again by the next attempt
            state_path.unlink(missing_ok=True)
        del state
    if group.leader:
        write_json(state_dir / "settings.json", {**asdict(settings), "identity": identity})
    resumed_from = step

    train_model: nn.Module = model
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    splittable = hasattr(loss_fn, "draw")
    share = settings.batch_size // group.world
    chunks = micro_ranges(share, execution.micro_batch)
    if (len(chunks) > 1 or group.distributed) and not splittable:
        raise UserError(f"{description}: this loss cannot be split over processes or micro-batches (it has no draw/compute)")
    rank_lo, _ = rank_slice(settings.batch_size, group.rank, group.world)
    batches = StepBatches(images, order, settings.batch_size, step, settings.steps, group.rank, group.world, execution.data_workers, pin_memory=cuda)

    # Losses not yet read back to the host: one device sync per log row (or checkpoint), not one
    # per step. A non-finite loss is still reported with its own step number, and state is never
    # saved past it (every save reads the pending losses first).
    pending: list[torch.Tensor] = []

    def drain() -> None:
        nonlocal window_loss, window_steps
        if not pending:
            return
        values = group.all_sum(torch.stack([p.float() for p in pending])).tolist()
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
        rng = _rng_states(gens, group, device)
        order_now = batches.order_state_after(step) if step > resumed_from else order.snapshot()
        if group.leader:
            record = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": None if ema is None else ema.state_dict(),
                "rng": rng,
                "order": order_now,
                "step": step,
                "log": log,
                "window": (window_loss, window_steps),
                "elapsed": elapsed_before + (time.perf_counter() - start),
                "identity": identity,
                "producer": {
                    "code": code,
                    "fingerprint": _probe(model, ema, optimizer, loss_fn, images, order_now, settings),
                    "torch": str(torch.__version__),
                    "processes": group.world,
                    "micro_batch": execution.micro_batch or 0,
                },
            }
            with atomic_path(state_path) as tmp:
                torch.save(record, tmp)
        group.barrier()

    start = time.perf_counter()
    margin = min(300.0, max(20.0, 0.05 * time_budget_s)) if time_budget_s else 0.0
    deadline = start + time_budget_s - margin if time_budget_s else None
    window_start = time.perf_counter()
    bar = progress(total=settings.steps, desc=description, unit="step") if group.leader else _NoBar()
    bar.update(step)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=settings.bf16 if cuda else settings.cpu_bf16)
    with _StopFlag() as stop:
        for step_no, xb in batches:
            x = xb.to(device, non_blocking=cuda)
            if cuda and settings.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            if len(chunks) == 1 and not group.distributed:
                # One process, one pass: exactly the computation of every earlier version.
                with torch.autocast(**autocast):
                    loss = loss_fn(train_model, x, gens["loss"])
                pending.append(loss.detach())
                loss.backward()
            else:
                draws = loss_fn.draw((settings.batch_size, *x.shape[1:]), gens["loss"])
                pending.append(accumulate_gradients(train_model, loss_fn, x, draws, rank_lo, chunks, settings.batch_size, group, autocast))
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, settings)
            apply_update(model, optimizer, ema, settings)
            step += 1
            assert step == step_no, (step, step_no)
            if after_step is not None:
                after_step(step, model)
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
            late = deadline is not None and time.perf_counter() > deadline and step < settings.steps
            if group.all_max(stop.raised or late):
                # Stopping already: a further SIGTERM (torchrun relays one to every rank once
                # the first rank exits) must not kill a rank that is still saving or exiting.
                stop.ignore_from_now()
                save_state()
                bar.close()
                why = "SIGTERM" if stop.raised else ("time budget of {:.0f}s nearly spent".format(time_budget_s) if late else "another process stopped")
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
