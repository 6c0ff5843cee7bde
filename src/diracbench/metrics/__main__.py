"""`python -m diracbench.metrics`: per-image and aggregate test metrics of one method.

Reads <task-dir>/measurements/test.npz, <task-dir>/operator.json and the method's
recon/test.npz (or, for the reference method `y`, the measurement itself), and writes
<out-dir>/per_image.csv (one row per image: psnr, ssim, lpips, dc, dc_ratio, nfe, seconds) and
<out-dir>/aggregate.csv (one row per metric: n, mean, bootstrap CI, and a note on the protocol;
FD-VGG and FID are set-level, without a CI).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from diracbench import cli
from diracbench.errors import UserError

REQUIRED = ("dataset", "task", "method", "seed", "lpips_net", "lpips_upsample_below", "fid", "bootstrap_resamples", "ci_level", "batch_size")


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.metrics", __doc__.splitlines()[0])
    parser.add_argument("--task-dir", required=True, type=Path, help="results/<dataset>/<task> (measurements/test.npz, operator.json)")
    parser.add_argument("--recon", type=Path, help="the method's recon/test.npz (omit for the reference method 'y')")
    parser.add_argument("--out-dir", required=True, type=Path, help="results/<dataset>/<task>/<method>/metrics")
    args = parser.parse_args(argv)
    s = args.settings
    missing = [k for k in REQUIRED if k not in s]
    if missing:
        raise UserError(f"--settings lacks {missing}")

    import numpy as np

    from diracbench.io import OutputSet
    from diracbench.metrics.evaluate import REFERENCE_METHOD, aggregate, match_names, read_measurements, read_recon, reference_recon, score
    from diracbench.operators import family_from_spec, load_operator_spec
    from diracbench.provenance import write_provenance
    from diracbench.runtime import configure_threads, device_description, resolve_device

    configure_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    meas = read_measurements(args.task_dir / "measurements" / "test.npz")
    spec = load_operator_spec(args.task_dir / "operator.json")
    operator = family_from_spec(spec).measurement_operator()
    if s["method"] == REFERENCE_METHOD:
        recon, source = reference_recon(meas), meas.path
    else:
        if args.recon is None:
            raise UserError(f"--recon is required for method {s['method']!r}")
        recon, source = read_recon(args.recon, s["method"], meas), args.recon
    idx = match_names(recon.names, meas.names, source)
    per_image, set_values, notes = score(recon, meas, idx, operator, float(spec["sigma_1"]), s, device)
    agg = aggregate(per_image, set_values, int(s["bootstrap_resamples"]), float(s["ci_level"]), int(s["seed"]), notes)
    with OutputSet() as out:
        per_image.to_csv(out.path(args.out_dir / "per_image.csv"), index=False, float_format="%.8g")
        agg.to_csv(out.path(args.out_dir / "aggregate.csv"), index=False, float_format="%.8g")
    means = agg.set_index("metric")["mean"]
    print(
        f"{s['dataset']}/{s['task']}/{s['method']}: n={len(per_image)} PSNR {means['psnr']:.2f} SSIM {means['ssim']:.4f} "
        f"LPIPS {means['lpips']:.4f} FD-VGG {means['fd_vgg']:.4g} FID {means['fid']:.4g} DC/sigma^2 {means['dc_ratio']:.3f}",
        flush=True,
    )
    for metric, (value, note) in set_values.items():
        if not np.isfinite(value):
            print(f"{metric}: {note}", flush=True)
    write_provenance(
        args.out_dir / "per_image.csv", "metrics", s, device=device_description(device), seeds=int(s["seed"]),
        extra={"inputs": {"recon": str(source), "measurements": str(meas.path)}, "seconds": time.perf_counter() - start},
    )


if __name__ == "__main__":
    cli.run(main, stage="diracbench.metrics")
