"""Training batches: one seeded global data order, read through a torch DataLoader.

The order is what it has always been: epoch-wise `randperm`s of one generator seeded with the
training seed, consumed `batch_size` indices per step and sorted within the batch. Every
data-parallel rank draws the same order and keeps its own contiguous slice of each global batch,
so the images of a step do not depend on how many processes share it.

A DataLoader (worker processes, pinned memory on CUDA) only moves the reading and the uint8 ->
float conversion off the training thread. Its sampler runs in the training process and may run
ahead of the step being trained (prefetch), so it records the order's state after every batch it
hands out; the resume state stores the record of the last *trained* step, never the prefetched one.
"""

from __future__ import annotations

import signal
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class BatchOrder:
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

    def snapshot(self) -> dict:
        # `perm` is replaced, never modified, at an epoch boundary: keeping a reference is safe.
        return {"perm": self.perm, "pos": self.pos, "gen": self.gen.get_state()}

    def restore(self, snap: dict) -> None:
        self.perm, self.pos = snap["perm"], int(snap["pos"])
        self.gen.set_state(snap["gen"])


def next_global_batch(order: BatchOrder, batch_size: int) -> np.ndarray:
    """The sorted image indices of the next step (sorted: memory-mapped reads go forward)."""
    return np.sort(order.next(batch_size))


def rank_slice(batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank `rank` in a global batch (equal shares: batch_size % world == 0)."""
    share = batch_size // world
    return rank * share, (rank + 1) * share


def to_float(images: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """uint8 images[idx] -> float32 in [0, 1] (the conversion training has always used)."""
    return torch.from_numpy(np.asarray(images[idx], dtype=np.float32) / 255.0)


class _Images(Dataset):
    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, np.ndarray]) -> tuple[int, torch.Tensor]:
        step, idx = key
        return step, to_float(self.images, idx)


class _StepSampler(Sampler):
    """Yields (step, this rank's indices) from `start` on; records the order after each step."""

    def __init__(self, order: BatchOrder, batch_size: int, start: int, steps: int, rank: int, world: int) -> None:
        self.order, self.batch_size, self.start, self.steps = order, batch_size, start, steps
        self.lo, self.hi = rank_slice(batch_size, rank, world)
        self.after: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for step in range(self.start + 1, self.steps + 1):
            idx = next_global_batch(self.order, self.batch_size)
            self.after[step] = self.order.snapshot()
            yield step, idx[self.lo : self.hi]

    def state_after(self, step: int) -> dict:
        """The order's state once `step` was drawn; forgets every earlier record."""
        for old in [s for s in self.after if s < step]:
            del self.after[old]
        return self.after[step]


def _ignore_sigterm(worker_id: int) -> None:
    # SLURM signals every process of a job step at walltime: a reader must not die before the
    # training process has saved its state; the DataLoader shuts its workers down itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StepBatches:
    """Iterates (step, float32 batch of this rank) for steps start+1 .. steps."""

    def __init__(self, images: np.ndarray, order: BatchOrder, batch_size: int, start: int, steps: int, rank: int, world: int, workers: int, pin_memory: bool) -> None:
        self.sampler = _StepSampler(order, batch_size, start, steps, rank, world)
        self.loader = DataLoader(
            _Images(images),
            sampler=self.sampler,
            batch_size=None,  # the sampler hands out whole batches
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=False,
            prefetch_factor=2 if workers > 0 else None,
            worker_init_fn=_ignore_sigterm,
            # Its own generator: creating an iterator draws a worker base seed, which must not
            # come from (and shift) the global generator that dropout uses.
            generator=torch.Generator().manual_seed(0),
        )

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        return iter(self.loader)

    def order_state_after(self, step: int) -> dict:
        return self.sampler.state_after(step)
