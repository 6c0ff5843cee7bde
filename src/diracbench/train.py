"""`python -m diracbench.train`: train one model with the shared resumable loop.

`--kind dirac` trains a Dirac denoiser with the incremental-reconstruction loss;
`--kind ddpm` trains the epsilon-prediction prior that DPS and DDRM use. Both run the same loop
(diracbench.training.loop), differing only in the loss and the network's conditioning.

Outputs: the weights file (`torch.load(weights_only=True)`-loadable) and a CSV of the loss log.
Resume state is kept in `<state-root>/<kind>-<hash>/` (hash of the settings, the SHA-256 of the
prepared training array and of the extra inputs), so changed settings or data never resume stale
state. The training code is not in the key: the state records what produced it, and an edit of
the code is judged by what it does (training.producer, `--on-code-change`).

Data parallel: run it under `torchrun --nproc_per_node N -m diracbench.train ...` (same
arguments). `--threads` is then the CPU budget of all N processes together. Execution settings
(`--micro-batch`, `--activation-checkpointing`, `--data-workers`) change how a step is computed,
not what it computes (README: equivalence tolerances).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from diracbench import cli
from diracbench.data import load_split
from diracbench.errors import UserError
from diracbench.io import atomic_path
from diracbench.nn.models import build_model, save_weights
from diracbench.nn.unet import count_parameters
from diracbench.provenance import settings_hash, write_provenance
from diracbench.runtime import configure_threads, device_description, resolve_device
from diracbench.training import producer
from diracbench.training.distributed import Group
from diracbench.training.loop import INTERRUPTED_EXIT_CODE, Execution, TrainingInterrupted, TrainSettings, train

# kind -> "module:function" returning the loss callable; imported lazily.
LOSS_FACTORIES = {
    "dirac": "diracbench.dirac.loss:make_loss",
    "ddpm": "diracbench.prior.loss:make_loss",
}


def load_loss_factory(kind: str):
    module_name, func = LOSS_FACTORIES[kind].split(":")
    module = importlib.import_module(module_name)
    return module, getattr(module, func)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def data_digest(path: Path, cache_dir: Path) -> str:
    """SHA-256 of the prepared array's bytes, cached by (path, size, mtime, inode).

    Hashing a 250 GB ImageNet array takes minutes, so a resumed run reuses the digest while the
    file is the one it hashed; prepare_data rewrites the file (new mtime and inode) whenever the
    pixels change.
    """
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cache = cache_dir / "data-digests.json"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if stamp in known:
        return known[stamp]
    digest = _file_digest(path)
    known = {k: v for k, v in known.items() if not k.startswith(f"{path.resolve()}|")}
    known[stamp] = digest
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps(known, indent=1))
    return digest


def state_identity(kind: str, settings: dict, data: Path, inputs: dict[str, Path], cache_dir: Path) -> dict[str, str]:
    """Everything that determines the trained weights besides the code (settings, data, inputs)."""
    return {
        "kind": kind,
        "settings": settings_hash(settings),
        "data": data_digest(data, cache_dir),
        **{f"input:{k}": _file_digest(p) for k, p in sorted(inputs.items())},
    }


def state_key(identity: dict[str, str]) -> str:
    return f"{identity['kind']}-{settings_hash(identity)}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.train", __doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, choices=sorted(LOSS_FACTORIES))
    parser.add_argument("--data", required=True, type=Path, help="results/<dataset>/data/train.npy")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="extra inputs for the loss (operator=..., schedule=...)")
    parser.add_argument("--weights", required=True, type=Path, help="output weights file")
    parser.add_argument("--log-csv", required=True, type=Path, help="output loss log")
    parser.add_argument("--state-root", required=True, type=Path, help="folder for resumable state (not a declared output)")
    parser.add_argument("--time-budget-min", type=float, default=None, help="stop cleanly (and exit 75) before this many minutes")
    parser.add_argument("--micro-batch", type=int, default=0, help="images per forward/backward on one process; 0: its whole share of training.batch_size (no accumulation)")
    parser.add_argument("--activation-checkpointing", type=int, choices=(0, 1), default=0, help="1: recompute U-Net blocks in backward (less memory, ~30%% more compute)")
    parser.add_argument("--data-workers", type=int, default=0, help="DataLoader worker processes per training process (0: read in the training process)")
    parser.add_argument(
        "--on-code-change",
        choices=producer.POLICIES,
        default=os.environ.get("DIRACBENCH_ON_CODE_CHANGE", "refuse"),
        help="when the resume state was made by code that trains a different function: refuse (default), resume anyway, or restart from step 0; default from $DIRACBENCH_ON_CODE_CHANGE",
    )
    args = parser.parse_args(argv)
    if args.on_code_change not in producer.POLICIES:
        raise UserError(f"DIRACBENCH_ON_CODE_CHANGE={args.on_code_change!r} is not one of {list(producer.POLICIES)}")
    if args.micro_batch < 0 or args.data_workers < 0:
        raise UserError("--micro-batch and --data-workers must be >= 0")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    configure_threads(max(1, args.threads // local_world))
    device = resolve_device(args.device)
    group = Group.from_env(cuda=device.type == "cuda")
    try:
        _train(args, device, group)
    finally:
        group.close()


def _train(args, device: torch.device, group: Group) -> None:
    if device.type == "cuda" and group.distributed:
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    s = args.settings
    for key in ("network", "image_size", "training", "loss"):
        if key not in s:
            raise UserError(f"--settings lacks {key!r}")
    inputs = cli.parse_inputs(args.input)
    images = load_split(args.data)
    if images.shape[-1] != s["image_size"]:
        raise UserError(f"{args.data} holds {images.shape[-1]}px images but the settings say image_size {s['image_size']}; rerun prepare_data")
    loss_module, make_loss = load_loss_factory(args.kind)
    loss_fn = make_loss(s["loss"], inputs, device)
    tset = TrainSettings.from_dict(s["training"])
    execution = Execution(micro_batch=args.micro_batch or None, activation_checkpointing=bool(args.activation_checkpointing), data_workers=args.data_workers, on_code_change=args.on_code_change)
    torch.manual_seed(tset.seed)  # initial weights (and Fourier frequencies) come from the seed
    model = build_model(args.kind, s["network"], s["image_size"])
    # Rank 0 hashes the data once; the others take its answer (and never race on the cache).
    identity = group.broadcast(state_identity(args.kind, s, args.data, inputs, args.state_root) if group.leader else None)
    state_dir = args.state_root / state_key(identity)
    if group.leader:
        print(f"{args.kind} model: {count_parameters(model):,} parameters; {len(images)} training images; device {device_description(device)}; {group.world} process(es)", flush=True)
    try:
        result = train(
            model, loss_fn, images, tset, state_dir, device,
            None if args.time_budget_min is None else 60.0 * args.time_budget_min,
            description=f"train {args.kind}", execution=execution, group=group, identity=identity, code=producer.code_digest(loss_module),
        )  # fmt: skip
    except TrainingInterrupted as stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the state is saved: exit 75, not -15
        if group.leader:
            print(str(stop), file=sys.stderr, flush=True)
        group.close()
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    if group.leader:
        meta = {"settings_hash": settings_hash(s), "steps": tset.steps, "seconds": result.seconds, "resumed_from": result.resumed_from, "parameters": count_parameters(model), "device": device_description(device), "loss": s["loss"]}
        save_weights(args.weights, args.kind, s["network"], s["image_size"], result.state_dict, result.ema_state_dict, meta)
        with atomic_path(args.log_csv) as tmp:
            pd.DataFrame(result.log, columns=["step", "loss", "images_per_s", "elapsed_s"]).to_csv(tmp, index=False)
        write_provenance(args.weights, f"train_{args.kind}", s, device=device_description(device), seeds=tset.seed, extra={"seconds": result.seconds, "state_dir": str(state_dir)})
        shutil.rmtree(state_dir, ignore_errors=True)
        print(f"trained {tset.steps} steps in {result.seconds:.1f}s -> {args.weights}", flush=True)
    group.barrier()


if __name__ == "__main__":
    cli.run(main, stage="diracbench.train")
