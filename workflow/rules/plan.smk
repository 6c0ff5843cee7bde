# The `plan` target: what every job of this configuration costs, before anything runs.
#
#   snakemake --cores 1 plan        -> results/plan.csv (one row per job) and results/plan.md
#
# Not part of `all`. The walltime check at every DAG build, and the planned resources and shards
# of the rules, are in plan_common.smk.
rule plan:
    input:
        code=code("plan.__main__"),
    output:
        csv="results/plan.csv",
        md="results/plan.md",
    params:
        # The whole configuration: the plan covers every job of the DAG.
        settings=settings(lambda w: PLAN_CONFIG),
    log:
        log("plan", "plan"),
    benchmark:
        bench("plan", "plan")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "python -m diracbench.plan --settings {params.settings:q} --out-csv {output.csv:q} --out-md {output.md:q} "
        "--threads {threads} > {log:q} 2>&1"
