# Every registered method with `rules: generic` (DPS, DDRM, PnP-ADMM, ADMM-TV, and any method
# added by a module with METHOD_SPECS): one tuning and one sampling rule, per environment.
#
# results/<ds>/<task>/<method>/tuning/{chosen.yaml,grid.csv}     (tune_method_<env>: val split)
# results/<ds>/<task>/<method>/recon/{test.npz,trajectory.csv}   (sample_method_<env>: test split)
# results/logs/{tune,sample}_<method>/<ds>_<task>.log, results/benchmarks/{tune,sample}_<method>/...
#
# The torch pair is written once; the scico pair (`use rule ... with:`) changes only what differs
# between environments: the conda environment, the method names it takes, and its resources (no
# GPU). Inputs, settings, resources and code come from the method's registry entry.

include: "methods_common.smk"


rule tune_method_torch:
    input:
        unpack(method_inputs),
        operator=rules.measure.output.operator,
        measurements=rules.measure.output.val,
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
    log:
        log("tune_{method}", "{dataset}_{task}"),
    benchmark:
        bench("tune_{method}", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=method_resource("tune", "mem_mb"),
        runtime=method_resource("tune", "runtime"),
        gpu=lambda w: int(METHOD_SPECS[w.method].gpu),
    shell:
        "python -m diracbench.tune --method {wildcards.method} --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} {params.inputs} "
        "--out-chosen {output.chosen:q} --out-grid {output.grid:q} --device {params.device:q} "
        "--threads {threads} > {log:q} 2>&1"


rule sample_method_torch:
    input:
        unpack(method_inputs),
        operator=rules.measure.output.operator,
        measurements=rules.measure.output.test,
        chosen="results/{dataset}/{task}/{method}/tuning/chosen.yaml",
        code=method_code("sample"),
    output:
        recon="results/{dataset}/{task}/{method}/recon/test.npz",
        trajectory="results/{dataset}/{task}/{method}/recon/trajectory.csv",
    wildcard_constraints:
        method=methods_in_env("torch"),
    params:
        settings=settings(lambda w: method_settings(w.method, "test", w)),
        inputs=method_input_args,
        device=method_device,
    log:
        log("sample_{method}", "{dataset}_{task}"),
    benchmark:
        bench("sample_{method}", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=method_resource("sample", "mem_mb"),
        runtime=method_resource("sample", "runtime"),
        gpu=lambda w: int(METHOD_SPECS[w.method].gpu),
    shell:
        "python -m diracbench.sample --method {wildcards.method} --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} --tuned {input.chosen:q} {params.inputs} "
        "--out {output.recon:q} --trajectory {output.trajectory:q} --device {params.device:q} "
        "--threads {threads} > {log:q} 2>&1"


# JAX/scico methods: same jobs, their own environment, CPU resources (no gpu request).
use rule tune_method_torch as tune_method_scico with:
    wildcard_constraints:
        method=methods_in_env("scico"),
    conda:
        "../../envs/scico.yaml"
    resources:
        mem_mb=method_resource("tune", "mem_mb"),
        runtime=method_resource("tune", "runtime"),


use rule sample_method_torch as sample_method_scico with:
    wildcard_constraints:
        method=methods_in_env("scico"),
    conda:
        "../../envs/scico.yaml"
    resources:
        mem_mb=method_resource("sample", "mem_mb"),
        runtime=method_resource("sample", "runtime"),


FINAL_TARGETS.extend(
    expand("results/{dataset}/{task}/{method}/recon/test.npz", dataset=DATASETS, task=TASKS, method=[m for m in METHODS if m in GENERIC_METHODS])
)
