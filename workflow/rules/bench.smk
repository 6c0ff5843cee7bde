# The `bench` target: cost at quality, batched vs official-style loops, pipeline overhead.
#
#   snakemake --cores all bench
#
# results/bench/methods.csv                 (bench_methods: every method's cost next to its test PSNR/LPIPS)
# results/bench/batching.csv                (bench_batching: Dirac sampling and loss, batched vs loops)
# results/bench/training.csv                (bench_training: CPU training step, fp32/bf16, layouts, threads)
# results/bench/{pipeline,stages}.csv       (bench_pipeline: `snakemake -n` on `all`, per-stage wall times)
# results/bench/summary.md                  (bench_summary: tables and targets)
#
# Not part of `all`. The bench jobs depend on the default run's outputs they measure (weights,
# chosen hyper-parameters, metrics); they run one after another (each waits for the previous one's
# CSV) so that no two measurements share the cores. bench_pipeline takes every output of `all`
# as input, so the `snakemake -n all` it times has nothing to do. `python -m diracbench.bench
# readme` then writes the README's Cost block from these files.

include: "bench_common.smk"


rule bench_methods:
    input:
        unpack(bench_method_inputs),
        code=code("bench.__main__", *method_modules(METHODS)),
    output:
        csv="results/bench/methods.csv",
    params:
        device=gpu_device,
        settings=settings(lambda w: {"max_images": bench_config()["max_images"], "jobs": [j["job"] for j in bench_method_jobs()]}),
        inputs=bench_method_args,
    log:
        log("bench_methods", "bench"),
    benchmark:
        bench("bench_methods", "bench")
    conda:
        "../../envs/scico.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    shell:
        "python -m diracbench.bench methods --settings {params.settings:q} {params.inputs} --out {output.csv:q} "
        "--device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule bench_batching:
    input:
        unpack(bench_batching_inputs),
        after=rules.bench_methods.output.csv,
        code=code("bench.__main__"),
    output:
        csv="results/bench/batching.csv",
    params:
        device=gpu_device,
        settings=settings(bench_batching_settings),
        inputs=bench_batching_args,
    log:
        log("bench_batching", "bench"),
    benchmark:
        bench("bench_batching", "bench")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
        gpu=1,
    shell:
        "python -m diracbench.bench batching --settings {params.settings:q} {params.inputs} --out {output.csv:q} "
        "--device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule bench_training:
    input:
        after=rules.bench_batching.output.csv,
        code=code("bench.__main__", "bench.cpu_training"),
    output:
        csv="results/bench/training.csv",
    params:
        settings=settings(bench_training_settings),
    log:
        log("bench_training", "bench"),
    benchmark:
        bench("bench_training", "bench")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m diracbench.bench training --settings {params.settings:q} --out {output.csv:q} "
        "--device cpu --threads {threads} > {log:q} 2>&1"


rule bench_pipeline:
    input:
        everything=all_targets,
        after=rules.bench_training.output.csv,
        code=code("bench.__main__"),
    output:
        dry_run="results/bench/pipeline.csv",
        stages="results/bench/stages.csv",
    params:
        # The whole configuration: the timed dry run must build exactly this workflow's DAG.
        settings=settings(lambda w: {"config": config}),
        snakefile=workflow.main_snakefile,
        python=sys.executable,
        repeats=lambda w: bench_config()["dry_run_repeats"],
    log:
        log("bench_pipeline", "bench"),
    benchmark:
        bench("bench_pipeline", "bench")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m diracbench.bench pipeline --settings {params.settings:q} --snakefile {params.snakefile:q} "
        "--snakemake-python {params.python:q} --workdir . --target all --repeats {params.repeats} "
        "--benchmarks results/benchmarks --out-dry-run {output.dry_run:q} --out-stages {output.stages:q} "
        "--threads {threads} > {log:q} 2>&1"


rule bench_summary:
    input:
        methods=rules.bench_methods.output.csv,
        batching=rules.bench_batching.output.csv,
        dry_run=rules.bench_pipeline.output.dry_run,
        stages=rules.bench_pipeline.output.stages,
        code=code("bench.__main__"),
    output:
        md="results/bench/summary.md",
    params:
        settings=settings(lambda w: {"targets": bench_config()["targets"]}),
        bench_dir=folder_of("methods", "input"),
    log:
        log("bench_summary", "bench"),
    benchmark:
        bench("bench_summary", "bench")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m diracbench.bench summary --settings {params.settings:q} --bench-dir {params.bench_dir:q} "
        "--out {output.md:q} --threads {threads} > {log:q} 2>&1"


rule bench:
    input:
        rules.bench_summary.output.md,
        rules.bench_methods.output.csv,
        rules.bench_batching.output.csv,
        rules.bench_training.output.csv,
        rules.bench_pipeline.output.dry_run,
        rules.bench_pipeline.output.stages,
