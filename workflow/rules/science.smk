# The paper's Tables 2-3 (networks; Dirac sampling hyper-parameters) and its claims as checks.
#
# results/tables/<ds>_table2_networks.{md,tex,csv,html}   (tables_hparams: configs + weights used)
# results/tables/<ds>_table3_sampling.{md,tex,csv,html}   (tables_hparams: chosen.yaml + config)
# results/tables/<ds>_claims.{md,csv,html}                (claims: metrics, trajectories)
#
# Both are seconds of work, so they are part of `all`. For a preset never run here, the same
# tables come from the config alone: python -m diracbench.tables_hparams --config <preset>.
include: "science_common.smk"


rule tables_hparams:
    input:
        files=lambda w: list(hparams_inputs(CORE_CONFIG, w.dataset).values()),
        code=code("tables_hparams"),
    output:
        t2=multiext("results/tables/{dataset}_table2_networks", ".md", ".tex", ".csv"),
        t2_html=report(
            "results/tables/{dataset}_table2_networks.html",
            caption="../report/science.rst",
            category="Tables 2-3, claims",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "Table 2 (networks)"},
        ),
        t3=multiext("results/tables/{dataset}_table3_sampling", ".md", ".tex", ".csv"),
        t3_html=report(
            "results/tables/{dataset}_table3_sampling.html",
            caption="../report/science.rst",
            category="Tables 2-3, claims",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "Table 3 (sampling)"},
        ),
    params:
        settings=settings(lambda w: hparams_settings(CORE_CONFIG, w.dataset)),
        inputs=hparams_input_args,
        out_stem="results/tables/{dataset}",
    log:
        log("tables_hparams", "{dataset}"),
    benchmark:
        bench("tables_hparams", "{dataset}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m diracbench.tables_hparams --settings {params.settings:q} {params.inputs} "
        "--out-stem {params.out_stem:q} --threads {threads} > {log:q} 2>&1"


rule claims:
    input:
        unpack(claims_inputs),
        code=code("claims"),
    output:
        md="results/tables/{dataset}_claims.md",
        csv="results/tables/{dataset}_claims.csv",
        html=report(
            "results/tables/{dataset}_claims.html",
            caption="../report/science.rst",
            category="Tables 2-3, claims",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "claims"},
        ),
    params:
        settings=settings(lambda w: {"dataset": w.dataset, "tasks": TASKS, "sigma_1": config["noise"]["sigma_max"]}),
        inputs=claims_input_args,
        out_stem="results/tables/{dataset}_claims",
    log:
        log("claims", "{dataset}"),
    benchmark:
        bench("claims", "{dataset}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m diracbench.claims --settings {params.settings:q} {params.inputs} "
        "--out-stem {params.out_stem:q} --threads {threads} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    expand(rules.tables_hparams.output.t3_html, dataset=DATASETS)
    + expand(rules.claims.output.md, dataset=DATASETS)
)
