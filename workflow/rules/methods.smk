# Every registered method with `rules: generic` (DPS, DDRM, PnP-ADMM, ADMM-TV, and any method
# added by a module with METHOD_SPECS): one tuning rule and one sampling rule per environment, and
# one gather step.
#
# results/<ds>/<task>/<method>/tuning/{chosen.yaml,grid.csv}          (tune_method_<env>: val split)
# results/<ds>/<task>/<method>/recon/shards/test-<k>-of-<n>.npz       (sample_method_<env>: shard k)
# results/<ds>/<task>/<method>/recon/{test.npz,trajectory.csv}        (gather_method: the n shards)
# results/logs/{tune,sample,gather}_<method>/<ds>_<task>[.shard<k>-of-<n>].log, and the same
# under results/benchmarks/
#
# The test split is sampled in n shards (whole batches; n from the planner and cluster.shard_size,
# 1 unless a job would not fit the walltime), each its own job that keeps its finished batches
# for a retry; gather_method joins them into exactly the files an unsharded run writes.
# The torch pair is written once; the scico pair (`use rule ... with:`) changes only what differs
# between environments: the conda environment, the method names it takes, and its resources (no
# GPU). Inputs, settings, resources and code come from the method's registry entry; runtime and
# mem_mb also from the planner (plan_common.smk).

include: "methods_common.smk"


rule tune_method_torch:
    input:
        unpack(method_inputs),
        operator=rules.measure.output.operator,
        measurements=rules.measure.output.val,
        shards=tune_shard_files,
        code=method_code("tune"),
    output:
        chosen="results/{dataset}/{task}/{method}/tuning/chosen.yaml",
        grid="results/{dataset}/{task}/{method}/tuning/grid.csv",
    wildcard_constraints:
        method=methods_in_env("torch"),
    params:
        settings=settings(lambda w: method_settings(w.method, "val", w)),
        inputs=method_input_args,
        device=method_device,
        # Split grids (cluster.shard_size.tune_<method>): the reconstructions come from the shard
        # files below, and this job scores them and chooses.
        gather=tune_gather_args,
    log:
        log("tune_{method}", "{dataset}_{task}"),
    benchmark:
        bench("tune_{method}", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    resources:
        mem_mb=planned(lambda w: f"tune_{w.method}", "mem_mb", method_resource("tune", "mem_mb")),
        runtime=planned(lambda w: f"tune_{w.method}", "runtime", method_resource("tune", "runtime")),
        gpu=planned(lambda w: f"tune_{w.method}", "gpu", lambda w: int(METHOD_SPECS[w.method].gpu)),
    shell:
        "python -m diracbench.tune --method {wildcards.method} --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} {params.inputs} {params.gather} "
        "--out-chosen {output.chosen:q} --out-grid {output.grid:q} --device {params.device:q} "
        "--threads {threads} > {log:q} 2>&1"


# One shard of a split grid: a contiguous run of the grid's sampler batches, kept batch by batch
# for a retry (diracbench.tune_shards). Only DPS and DDRM grids are split.
rule tune_method_shard:
    input:
        unpack(method_inputs),
        operator=rules.measure.output.operator,
        measurements=rules.measure.output.val,
        code=method_code("tune"),
    output:
        shard=TUNE_SHARD,
    wildcard_constraints:
        method="dps|ddrm",
        shard=r"\d+",
        shards=r"\d+",
    params:
        settings=settings(lambda w: method_settings(w.method, "val", w)),
        inputs=method_input_args,
        device=method_device,
    log:
        log("tune_{method}", "{dataset}_{task}.shard{shard}-of-{shards}"),
    benchmark:
        bench("tune_{method}", "{dataset}_{task}.shard{shard}-of-{shards}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    resources:
        mem_mb=planned(lambda w: f"tune_{w.method}", "mem_mb", method_resource("tune", "mem_mb")),
        runtime=planned(lambda w: f"tune_{w.method}", "runtime", method_resource("tune", "runtime")),
        gpu=planned(lambda w: f"tune_{w.method}", "gpu", lambda w: int(METHOD_SPECS[w.method].gpu)),
    shell:
        "python -m diracbench.tune --method {wildcards.method} --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} {params.inputs} "
        "--shard {wildcards.shard}/{wildcards.shards} --out-shard {output.shard:q} --device {params.device:q} "
        "--threads {threads} > {log:q} 2>&1"


rule sample_method_torch:
    input:
        unpack(method_inputs),
        operator=rules.measure.output.operator,
        measurements=rules.measure.output.test,
        chosen="results/{dataset}/{task}/{method}/tuning/chosen.yaml",
        code=method_code("sample"),
    output:
        shard=SHARD_FILE,
    wildcard_constraints:
        method=methods_in_env("torch"),
        shard=r"\d+",
        shards=r"\d+",
    params:
        settings=settings(lambda w: method_settings(w.method, "test", w)),
        inputs=method_input_args,
        device=method_device,
    log:
        log("sample_{method}", "{dataset}_{task}.shard{shard}-of-{shards}"),
    benchmark:
        bench("sample_{method}", "{dataset}_{task}.shard{shard}-of-{shards}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    resources:
        mem_mb=planned(lambda w: f"sample_{w.method}", "mem_mb", method_resource("sample", "mem_mb")),
        runtime=planned(lambda w: f"sample_{w.method}", "runtime", method_resource("sample", "runtime")),
        gpu=planned(lambda w: f"sample_{w.method}", "gpu", lambda w: int(METHOD_SPECS[w.method].gpu)),
    shell:
        "python -m diracbench.sample --method {wildcards.method} --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} --tuned {input.chosen:q} {params.inputs} "
        "--shard {wildcards.shard}/{wildcards.shards} --out {output.shard:q} --device {params.device:q} "
        "--threads {threads} > {log:q} 2>&1"


# Joining shards is cheap file work: it runs where Snakemake runs, never as a cluster job.
localrules:
    gather_method,


rule gather_method:
    input:
        shards=shard_files(lambda w: w.method),
        code=code("gather"),
    output:
        recon="results/{dataset}/{task}/{method}/recon/test.npz",
        trajectory="results/{dataset}/{task}/{method}/recon/trajectory.csv",
    wildcard_constraints:
        method="|".join(map(re.escape, GENERIC_METHODS)) or "(?!)",
    log:
        log("gather_{method}", "{dataset}_{task}"),
    benchmark:
        bench("gather_{method}", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m diracbench.gather --shards {input.shards:q} --out {output.recon:q} "
        "--trajectory {output.trajectory:q} > {log:q} 2>&1"


# JAX/scico methods: same jobs, their own environment, CPU resources (no gpu request).
use rule tune_method_torch as tune_method_scico with:
    wildcard_constraints:
        method=methods_in_env("scico"),
    conda:
        "../../envs/scico.yaml"
    resources:
        mem_mb=planned(lambda w: f"tune_{w.method}", "mem_mb", method_resource("tune", "mem_mb")),
        runtime=planned(lambda w: f"tune_{w.method}", "runtime", method_resource("tune", "runtime")),


use rule sample_method_torch as sample_method_scico with:
    wildcard_constraints:
        method=methods_in_env("scico"),
        shard=r"\d+",
        shards=r"\d+",
    conda:
        "../../envs/scico.yaml"
    resources:
        mem_mb=planned(lambda w: f"sample_{w.method}", "mem_mb", method_resource("sample", "mem_mb")),
        runtime=planned(lambda w: f"sample_{w.method}", "runtime", method_resource("sample", "runtime")),


FINAL_TARGETS.extend(
    expand("results/{dataset}/{task}/{method}/recon/test.npz", dataset=DATASETS, task=TASKS, method=[m for m in METHODS if m in GENERIC_METHODS])
)
