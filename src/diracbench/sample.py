"""`python -m diracbench.sample --method M`: reconstruct a measurement set with one method.

Reads the shared measurements (never regenerates y), merges the method's fixed hyper-parameters
with the values its tuning rule chose on the val split, and writes `recon/<split>.npz`
(`x_hat` float32 N x C x H x W in [0, 1], `names`, `nfe`, `seconds` per image) together with
`trajectory.csv` (per-step, per-image log; empty for methods that have no trajectory).

Example:
    python -m diracbench.sample --method ddrm --settings @ddrm.yaml \
        --operator results/photos/deblur/operator.json \
        --measurements results/photos/deblur/measurements/test.npz \
        --tuned results/photos/deblur/ddrm/tuning/chosen.yaml --input prior=results/photos/prior/weights.pt \
        --out results/photos/deblur/ddrm/recon/test.npz --trajectory results/photos/deblur/ddrm/recon/trajectory.csv
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from diracbench import cli
from diracbench.errors import UserError
from diracbench.io import OutputSet, read_yaml
from diracbench.methods import load_method
from diracbench.methods.base import RunContext, empty_trajectory, load_problem
from diracbench.provenance import write_provenance
from diracbench.runtime import configure_threads, device_description, resolve_device


def read_tuned(arg: str | None) -> dict:
    """`FILE` or `FILE:KEY` (a sub-mapping, e.g. Dirac's `chosen.yaml:po`)."""
    if not arg:
        return {}
    path, _, key = arg.partition(":") if not Path(arg).is_file() else (arg, "", "")
    data = read_yaml(path, producer="the method's tuning rule")
    if key:
        if not isinstance(data, dict) or key not in data:
            raise UserError(f"{path} has no entry {key!r}; rerun the tuning rule")
        data = data[key]
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of chosen hyper-parameters; rerun the tuning rule")
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.sample", __doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--operator", required=True, type=Path)
    parser.add_argument("--measurements", required=True, type=Path)
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--tuned", default=None, help="chosen.yaml from the tuning rule, optionally FILE:KEY")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--trajectory", required=True, type=Path)
    parser.add_argument("--extra-out", action="append", default=[], metavar="NAME=PATH", help="write the method's extra output NAME (a dict of arrays) as .npz")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    s = args.settings
    method = load_method(args.method)
    extra_out = {}
    for item in args.extra_out:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--extra-out {item!r}: expected NAME=PATH")
        extra_out[name] = Path(path)
    problem = load_problem(args.operator, args.measurements, args.split, device).subset(s.get("max_images"))
    hparams = {**s.get("hparams", {}), **read_tuned(args.tuned)}
    ctx = RunContext(device=device, threads=args.threads, seed=int(s.get("seed", 0)), inputs=cli.parse_inputs(args.input))
    start = time.perf_counter()
    recon = method.reconstruct(problem, hparams, ctx)
    wall = time.perf_counter() - start
    if recon.x_hat.shape != tuple(problem.y.shape):
        raise RuntimeError(f"{args.method} returned {recon.x_hat.shape}, expected {tuple(problem.y.shape)}")
    trajectory = recon.trajectory if recon.trajectory is not None else empty_trajectory()
    missing = sorted(set(extra_out) - set(recon.extras))
    if missing:
        raise UserError(f"{args.method} produced no extra output {missing} (it made {sorted(recon.extras)}); check the method's settings")
    with OutputSet() as out:
        out.write_npz(args.out, x_hat=recon.x_hat, names=np.array(problem.names), nfe=recon.nfe, seconds=recon.seconds)
        trajectory.to_csv(out.path(args.trajectory), index=False)
        for name, path in extra_out.items():
            out.write_npz(path, **recon.extras[name])
    write_provenance(args.out, f"sample_{args.method}", {"settings": s, "hparams": hparams}, device=device_description(device), seeds=ctx.seed, extra={"wall_seconds": wall, "n_images": len(problem)})
    print(f"{args.method}: {len(problem)} images in {wall:.1f}s ({wall / max(len(problem), 1):.3f}s/image), mean NFE {recon.nfe.mean():.1f}", flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.sample")
