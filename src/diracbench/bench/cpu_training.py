"""Training speed of the embedded default on this CPU: what each execution choice buys.

`python -m diracbench.bench training` times Adam steps of the incremental-reconstruction loss with
the default's network, image size, blur kernel and batch (gpu.measure, the same step the GPU check
times) for each choice the trainer offers on a CPU — fp32 or bf16 autocast, contiguous or
channels-last, 1 or more threads, and optionally torch.compile — all in one process, one after the
other, so that each is a ratio to the fp32/contiguous run at the rule's thread count rather than
a number compared across machines or runs. Compilation time is reported apart from the step time.
"""

from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import torch

from diracbench.bench.gpu import measure
from diracbench.textables import markdown_table

COLUMNS = ["precision", "channels_last", "compiled", "threads", "batch_size", "steps", "s_per_step", "images_per_s", "speedup", "setup_s"]


def run(network: dict, image_size: int, kernel_size: int, batch_size: int, steps: int, warmup: int, threads: Sequence[int], compile_too: bool) -> pd.DataFrame:
    """One row per measured combination; `speedup` is against fp32, contiguous, max(threads)."""
    combos = [(p, cl, False) for p in ("fp32", "bf16") for cl in (False, True)]
    if compile_too:
        combos += [("fp32", False, True), ("bf16", False, True)]
    rows = []
    top = max(threads)
    device = torch.device("cpu")
    before = torch.get_num_threads()
    try:
        for n in sorted(set(threads), reverse=True):
            torch.set_num_threads(n)
            # Fewer threads: only the contiguous, eager pair (fp32, bf16), to read the thread scaling.
            for precision, channels_last, compiled in combos if n == top else [c for c in combos if not c[1] and not c[2]]:
                start = time.perf_counter()
                # The warm-up steps of `measure` include compilation; they are timed apart here.
                out = measure(network, image_size, kernel_size, device, batch_size, 1, steps, warmup, precision == "bf16", channels_last, compiled)
                total = time.perf_counter() - start
                train = next(r for r in out if r["mode"] == "train")
                rows.append({
                    "precision": precision, "channels_last": channels_last, "compiled": compiled, "threads": n,
                    "batch_size": batch_size, "steps": steps, "s_per_step": train["seconds"] / steps,
                    "images_per_s": train["images_per_s"], "setup_s": total - train["seconds"],
                })  # fmt: skip
    finally:
        torch.set_num_threads(before)
    df = pd.DataFrame(rows)
    ref = df[(df["precision"] == "fp32") & ~df["channels_last"] & ~df["compiled"] & (df["threads"] == top)]["s_per_step"].iloc[0]
    df["speedup"] = ref / df["s_per_step"]
    return df[COLUMNS]


def format_table(df: pd.DataFrame, header: str) -> str:
    head = ["precision", "channels-last", "torch.compile", "threads", "batch", "s/step", "images/s", "speed-up", "set-up s"]
    rows = [
        [r.precision, "yes" if r.channels_last else "no", "yes" if r.compiled else "no", r.threads, r.batch_size, f"{r.s_per_step:.3f}", f"{r.images_per_s:.1f}", f"{r.speedup:.2f}×", f"{r.setup_s:.0f}"]
        for r in df.itertuples()
    ]
    return "\n".join([header, "", *markdown_table(head, rows, "lllrrrrrr")]) + "\n"
