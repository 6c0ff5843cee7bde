# The `plan` target: what every job of this configuration costs, before anything runs.
#
#   snakemake --cores 1 plan        -> results/plan.csv (one row per job) and results/plan.md
#
# Not part of `all`. At every DAG build this file also asks the planner whether each job fits the
# `cluster:` section's walltime (sharded where it can be) and stops with one line naming the
# setting to change if not. Network FLOP/memory counts are cached (~/.cache/diracbench, or
# $DIRACBENCH_PLAN_CACHE; '' disables), so only the first DAG build of a new network imports torch.
from diracbench import plan as planner

# The planner reads method sections by name; give it every configured method's section with its
# registry defaults filled in (a config may leave a section out).
PLAN_CONFIG = {**config, **METHOD_CONFIG}

try:
    planner.check(PLAN_CONFIG)
except UserError as err:
    raise WorkflowError(str(err)) from None


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
