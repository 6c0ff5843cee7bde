"""`python -m diracbench.train`: train one model with the shared resumable loop.

`--kind dirac` trains a Dirac denoiser with the incremental-reconstruction loss;
`--kind ddpm` trains the epsilon-prediction prior that DPS and DDRM use. Both run the same loop
(diracbench.training.loop), differing only in the loss and the network's conditioning.

Outputs: the weights file (`torch.load(weights_only=True)`-loadable) and a CSV of the loss log.
Resume state is kept in `<state-root>/<kind>-<hash>/` (hash of settings, data manifest, extra
inputs and training code), so a changed configuration never resumes stale state.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import shutil
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
from diracbench.training.loop import INTERRUPTED_EXIT_CODE, TrainingInterrupted, TrainSettings, train

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
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_key(kind: str, settings: dict, data_manifest: Path | None, inputs: dict[str, Path], loss_module) -> str:
    """Hash of everything that determines the trained weights (settings, data, inputs, code)."""
    import diracbench.nn as nn_pkg
    import diracbench.training as training_pkg

    code = hashlib.sha256()
    for pkg in (nn_pkg, training_pkg):
        for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
            code.update(f.read_bytes())
    code.update(Path(inspect.getfile(loss_module)).read_bytes())
    parts = {
        "kind": kind,
        "settings": settings,
        "data": _file_digest(data_manifest) if data_manifest and data_manifest.is_file() else None,
        "inputs": {k: _file_digest(p) for k, p in sorted(inputs.items())},
        "code": code.hexdigest(),
    }
    return f"{kind}-{settings_hash(parts)}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.train", __doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, choices=sorted(LOSS_FACTORIES))
    parser.add_argument("--data", required=True, type=Path, help="results/<dataset>/data/train.npy")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="extra inputs for the loss (operator=..., schedule=...)")
    parser.add_argument("--weights", required=True, type=Path, help="output weights file")
    parser.add_argument("--log-csv", required=True, type=Path, help="output loss log")
    parser.add_argument("--state-root", required=True, type=Path, help="folder for resumable state (not a declared output)")
    parser.add_argument("--time-budget-min", type=float, default=None, help="stop cleanly (and exit 75) before this many minutes")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
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
    torch.manual_seed(tset.seed)  # initial weights (and Fourier frequencies) come from the seed
    model = build_model(args.kind, s["network"], s["image_size"])
    manifest = args.data.with_name(args.data.stem + "_manifest.csv")
    state_dir = args.state_root / state_key(args.kind, s, manifest, inputs, loss_module)
    print(f"{args.kind} model: {count_parameters(model):,} parameters; {len(images)} training images; device {device_description(device)}", flush=True)
    try:
        result = train(model, loss_fn, images, tset, state_dir, device, None if args.time_budget_min is None else 60.0 * args.time_budget_min, description=f"train {args.kind}")
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    meta = {"settings_hash": settings_hash(s), "steps": tset.steps, "seconds": result.seconds, "resumed_from": result.resumed_from, "parameters": count_parameters(model), "device": device_description(device), "loss": s["loss"]}
    save_weights(args.weights, args.kind, s["network"], s["image_size"], result.state_dict, result.ema_state_dict, meta)
    with atomic_path(args.log_csv) as tmp:
        pd.DataFrame(result.log, columns=["step", "loss", "images_per_s", "elapsed_s"]).to_csv(tmp, index=False)
    write_provenance(args.weights, f"train_{args.kind}", s, device=device_description(device), seeds=tset.seed, extra={"seconds": result.seconds, "state_dir": str(state_dir)})
    shutil.rmtree(state_dir, ignore_errors=True)
    print(f"trained {tset.steps} steps in {result.seconds:.1f}s -> {args.weights}", flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.train")
