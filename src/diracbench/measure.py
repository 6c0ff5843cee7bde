"""`python -m diracbench.measure`: noisy measurements made once, shared by every method.

y = A_1(x) + sigma_1 z in the [0, 1] range, with z drawn from a generator seeded per image from
(seed, dataset, task, split, image name), so every method reconstructs exactly the same y, and a
given image's noise does not depend on which other images are in the split.

Writes <out-dir>/operator.json (everything needed to rebuild the operator) and
<out-dir>/measurements/{val,test}.npz with float32 `x` (clean) and `y`, N x C x H x W, plus the
image `names` and per-image noise `seeds`.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diracbench import cli
from diracbench.data import load_split, to_unit_float
from diracbench.errors import UserError
from diracbench.io import OutputSet
from diracbench.operators import GeometricNoise, family_from_config, operator_spec
from diracbench.provenance import write_provenance
from diracbench.runtime import configure_threads
from diracbench.seeding import image_generators, randn_per_image

MEASURED_SPLITS = ("val", "test")


def read_names(manifest: Path, n: int) -> list[str]:
    if not manifest.is_file():
        raise UserError(f"{manifest} does not exist; rerun the 'prepare_data' rule")
    with open(manifest, newline="") as fh:
        names = [row["name"] for row in csv.DictReader(fh)]
    if len(names) != n:
        raise UserError(f"{manifest} lists {len(names)} images but the array has {n}; delete the dataset folder and rerun 'prepare_data'")
    return names


def noise_seeds(seed: int, dataset: str, task: str, split: str, names: list[str]) -> np.ndarray:
    from diracbench.seeding import seed_from_string

    return np.array([seed_from_string("measurement", seed, dataset, task, split, name) for name in names], dtype=np.int64)


def measure(x: torch.Tensor, family, sigma_1: float, seeds: np.ndarray) -> torch.Tensor:
    z = randn_per_image(x.shape, image_generators(seeds.tolist()))
    return family.measurement_operator().forward(x) + sigma_1 * z


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.measure", __doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="results/<dataset>/data")
    parser.add_argument("--out-dir", required=True, type=Path, help="results/<dataset>/<task>")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    s = args.settings
    for key in ("dataset", "task", "image_size", "operator", "noise", "seed"):
        if key not in s:
            raise UserError(f"--settings lacks {key!r}")
    start = time.perf_counter()
    family = family_from_config(s["operator"], s["image_size"])
    noise = GeometricNoise.from_dict(s["noise"])
    spec = operator_spec(family, noise, s["task"])
    results = {}
    for split in MEASURED_SPLITS:
        pixels = load_split(args.data_dir / f"{split}.npy", mmap=False)
        if pixels.shape[-1] != s["image_size"]:
            raise UserError(f"{args.data_dir / f'{split}.npy'} holds {pixels.shape[-1]}px images but the config says image_size {s['image_size']}; rerun 'prepare_data'")
        names = read_names(args.data_dir / f"{split}_manifest.csv", len(pixels))
        seeds = noise_seeds(int(s["seed"]), s["dataset"], s["task"], split, names)
        x = torch.from_numpy(to_unit_float(pixels))
        y = measure(x, family, noise.sigma_1, seeds)
        results[split] = {"x": x.numpy(), "y": y.numpy().astype(np.float32), "names": np.array(names), "seeds": seeds}
    with OutputSet() as out:
        import json

        out.write_text(args.out_dir / "operator.json", json.dumps(spec, indent=2) + "\n")
        for split, arrays in results.items():
            out.write_npz(args.out_dir / "measurements" / f"{split}.npz", **arrays)
    for split, arrays in results.items():
        # PSNR of y is the reference row `y` of Table 1 (metrics), not computed here: measure
        # stays independent of the metric code, so editing a metric reruns no measurement.
        print(f"{split}: {len(arrays['x'])} measurements", flush=True)
    write_provenance(args.out_dir / "measurements" / "measurements.json", "measure", s, seeds=int(s["seed"]), extra={"seconds": time.perf_counter() - start})


if __name__ == "__main__":
    cli.run(main, stage="diracbench.measure")
