"""`python -m diracbench.gather`: join the shard files of `sample --shard K/N` into the usual outputs.

Writes exactly what an unsharded `python -m diracbench.sample` writes: `recon/<split>.npz`
(x_hat, names, nfe, seconds), `trajectory.csv` and any `--extra-out NAME=PATH` (Dirac's posterior
samples come from the shard holding image 0). The shards must tile the split without gaps or
overlaps; empty shards (more shards than batches) are allowed.

Example:
    python -m diracbench.gather --shards recon/shards/test-0-of-4.npz ... recon/shards/test-3-of-4.npz \
        --out recon/test.npz --trajectory recon/trajectory.csv --extra-out posterior_samples=recon/posterior_samples.npz
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from diracbench import cli
from diracbench.errors import UserError
from diracbench.io import read_npz
from diracbench.provenance import write_provenance
from diracbench.sharding import arrays_to_extras, assemble, write_outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.gather", __doc__.splitlines()[0])
    parser.add_argument("--shards", nargs="+", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--trajectory", required=True, type=Path)
    parser.add_argument("--extra-out", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args(argv)
    extra_out = cli.parse_named_paths(args.extra_out, "--extra-out")
    shards = [(path, read_npz(path, required=("x_hat", "names", "nfe", "seconds", "images"), producer="`python -m diracbench.sample --shard K/N`")) for path in args.shards]
    shards.sort(key=lambda item: (int(item[1]["images"][0]), int(item[1]["images"][1])))
    totals = {int(a["images"][2]) for _, a in shards}
    if len(totals) != 1:
        raise UserError(f"the shards come from different splits or settings (image counts {sorted(totals)}); rerun the sample shards")
    total = totals.pop()
    pos = 0
    for path, a in shards:
        start, stop = int(a["images"][0]), int(a["images"][1])
        if start == stop:
            continue  # an empty shard
        if start != pos:
            raise UserError(f"{path} starts at image {start} but the shards before it end at {pos}: {'a shard is missing' if start > pos else 'shards overlap'}; rerun the sample shards")
        if len(a["x_hat"]) != stop - start:
            raise UserError(f"{path} holds {len(a['x_hat'])} images but claims {start}:{stop}; delete it and rerun its shard")
        pos = stop
    if pos != total:
        raise UserError(f"the shards cover images 0:{pos} of {total}; a shard is missing")
    pieces = [a for _, a in shards if int(a["images"][1]) > int(a["images"][0])]
    extras: dict = {}
    for _, a in shards:
        extras.update(arrays_to_extras(a))
    shape = tuple(pieces[0]["x_hat"].shape[1:]) if pieces else (0,)
    order = [str(v) for v in shards[0][1]["trajectory_order"]] if "trajectory_order" in shards[0][1] else ["image", "step"]
    result = assemble(pieces, extras, shape, order)
    write_outputs(result, args.out, args.trajectory, extra_out)
    write_provenance(args.out, "gather", {"shards": [str(p) for p, _ in shards]}, extra={"n_images": total})
    print(f"gather: {total} images from {len(shards)} shards -> {args.out}", flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.gather")
