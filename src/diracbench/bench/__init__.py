"""`python -m diracbench.bench`: what each method costs at its quality, and what batching buys.

Subcommands (the `bench` target of the workflow runs the first four; see workflow/rules/bench.smk):

- `methods`  — cost at quality: every method reconstructs the first test images of each task in
  its own subprocess (so peak memory is per method), with network forward/backward passes counted
  by hooks on the model; joined with the default run's test PSNR/LPIPS -> results/bench/methods.csv.
- `batching` — batched Dirac sampling (batch 1, 8, 32) and the batched incremental-reconstruction
  loss against official-style one-image / one-sample loops on the same network, in one process
  with the same threads, median of repeats -> results/bench/batching.csv.
- `pipeline` — wall time of `snakemake -n` with nothing to do, and per-stage wall times from the
  rules' `benchmark:` files -> results/bench/pipeline.csv, results/bench/stages.csv.
- `summary`  — results/bench/summary.md from those CSVs, with every target met or missed.
- `readme`   — rewrites only the block between `<!-- COST:BEGIN` and `<!-- COST:END -->` in
  README.md from the CSVs, naming the machine they were measured on.
- `gpu`      — the GPU check: training and sampling throughput of the paper-size 67.7M network
  at 256x256 (fp32 vs bf16, channels-last on/off). Refuses to run without CUDA unless asked for
  the `--allow-cpu --tiny` smoke mode, whose numbers are labelled as such.

Speed and memory are measured here and only here: no unit test asserts a timing.
"""
