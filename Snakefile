# diracbench workflow entry point: configuration, rule files, and the default target.
# All science lives in the `diracbench` package (src/); rules only wire files together.

from snakemake.utils import min_version

min_version("9.19")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


include: "workflow/rules/data.smk"


include: "workflow/rules/dirac.smk"


include: "workflow/rules/baselines_diffusion.smk"


include: "workflow/rules/methods.smk"


include: "workflow/rules/report.smk"


include: "workflow/rules/science.smk"  # Tables 2-3 and the claims table (part of `all`)


include: "workflow/rules/bench.smk"  # the `bench` target; not part of `all`


include: "workflow/rules/ablations.smk"  # the `ablations` target (Figs. 8-9); not part of `all`


include: "workflow/rules/plan.smk"  # the `plan` target (and the walltime check); not part of `all`


include: "workflow/rules/extended.smk"  # the `extended` target (config `extended:`); not part of `all`


include: "workflow/rules/seeds.smk"  # the `seeds` target (config `seeds:`); not part of `all`


rule all:
    default_target: True
    input:
        FINAL_TARGETS,
