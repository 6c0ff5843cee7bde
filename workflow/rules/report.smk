# Evaluation: per-method metrics, Table 1 per dataset, the paper's figures, report entries.
#
# Methods appear automatically: a configured method is scored as soon as its reconstructions
# exist or some rule of the workflow makes them (`producible`), so the DAG stays valid while
# method rules are added, and a method dropped from `methods:` disappears everywhere.


include: "report_common.smk"


rule metrics:
    input:
        unpack(metrics_inputs),
        code=code("metrics.__main__", *metric_modules()),
    output:
        per_image="results/{dataset}/{task}/{method}/metrics/per_image.csv",
        aggregate="results/{dataset}/{task}/{method}/metrics/aggregate.csv",
    wildcard_constraints:
        method="|".join(re.escape(m) for m in ALL_METHODS + [REFERENCE]),
    params:
        settings=settings(metrics_settings),
        scoring=scoring_args,
        out_dir=folder_of("aggregate"),
    log:
        log("metrics", "{dataset}_{task}_{method}"),
    benchmark:
        bench("metrics", "{dataset}_{task}_{method}")
    conda:
        "../../envs/torch.yaml"
    # One thread: a metrics job is mostly start-up (torch, torchvision, backbone weights), so two
    # of them side by side on two cores finish sooner than one with two threads.
    threads: 1
    resources:
        mem_mb=planned("metrics", "mem_mb", 6000),
        runtime=planned("metrics", "runtime", 30),
    shell:
        "python -m diracbench.metrics --settings {params.settings:q} {params.scoring} "
        "--out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"


# Where cluster.shard_size.metrics splits a job (1000 images of LPIPS-VGG on one CPU thread take
# about half an hour), each shard scores whole batches and keeps them for a retry; the metrics job
# above then only gathers (per_image.csv and aggregate.csv equal an unsharded run's).
rule metrics_shard:
    input:
        unpack(scoring_inputs),
        code=code("metrics.__main__", *metric_modules()),
    output:
        shard=METRIC_SHARD,
    wildcard_constraints:
        method="|".join(re.escape(m) for m in ALL_METHODS + [REFERENCE]),
        shard=r"\d+",
        shards=r"\d+",
    params:
        settings=settings(metrics_settings),
        scoring=scoring_args,
    log:
        log("metrics", "{dataset}_{task}_{method}.shard{shard}-of-{shards}"),
    benchmark:
        bench("metrics", "{dataset}_{task}_{method}.shard{shard}-of-{shards}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=planned("metrics", "mem_mb", 6000),
        runtime=planned("metrics", "runtime", 30),
    shell:
        "python -m diracbench.metrics --settings {params.settings:q} {params.scoring} "
        "--shard {wildcards.shard}/{wildcards.shards} --out-shard {output.shard:q} --threads {threads} > {log:q} 2>&1"


rule tables:
    input:
        aggregates=table_aggregates,
        code=code("tables"),
    output:
        md="results/tables/{dataset}.md",
        tex="results/tables/{dataset}.tex",
        csv="results/tables/{dataset}.csv",
        html=report(
            "results/tables/{dataset}.html",
            caption="../report/table.rst",
            category="Table 1",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "Table 1 (md/tex/csv beside it)"},
        ),
    params:
        settings=settings(lambda w: {"dataset": w.dataset, "tasks": TASKS, "methods": METHODS, "seed": config["seed"], "method_labels": method_labels(METHODS)}),
        out_stem=lambda w, output: os.path.splitext(output.csv)[0],
    log:
        log("tables", "{dataset}"),
    benchmark:
        bench("tables", "{dataset}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m diracbench.tables --settings {params.settings:q} --aggregates {input.aggregates:q} "
        "--out-stem {params.out_stem:q} --threads {threads} > {log:q} 2>&1"


rule figure:
    input:
        unpack(lambda w: figure_inputs(FIGURE_OF[w.name], w.dataset, w.task)),
        code=code("figures"),
    output:
        png=report(
            "results/figures/{dataset}_{task}_{name}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{dataset} {task}",
            labels={"dataset": "{dataset}", "task": "{task}", "figure": "{name}"},
        ),
        pdf="results/figures/{dataset}_{task}_{name}.pdf",
    wildcard_constraints:
        name="|".join(PER_TASK_FIGURES.values()),
    params:
        figure=lambda w: FIGURE_OF[w.name],
        settings=settings(figure_settings),
        inputs=figure_args,
        out_stem=lambda w, output: os.path.splitext(output.png)[0],
    log:
        log("figure", "{dataset}_{task}_{name}"),
    benchmark:
        bench("figure", "{dataset}_{task}_{name}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m diracbench.figures {params.figure} --settings {params.settings:q} {params.inputs} "
        "--out-stem {params.out_stem:q} --threads {threads} > {log:q} 2>&1"


rule figure_schedules:
    input:
        unpack(lambda w: figure_inputs("schedules", w.dataset)),
        code=code("figures"),
    output:
        png=report(
            "results/figures/{dataset}_fig7_schedules.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "task": "all", "figure": "fig7_schedules"},
        ),
        pdf="results/figures/{dataset}_fig7_schedules.pdf",
    params:
        settings=settings(lambda w: {**figure_settings(w), "schedules": schedule_sources()}),
        inputs=figure_args,
        out_stem=lambda w, output: os.path.splitext(output.png)[0],
    log:
        log("figure", "{dataset}_fig7_schedules"),
    benchmark:
        bench("figure", "{dataset}_fig7_schedules")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m diracbench.figures schedules --settings {params.settings:q} {params.inputs} "
        "--out-stem {params.out_stem:q} --threads {threads} > {log:q} 2>&1"


# One provenance.json per folder: commit, packages, config hash, seeds, and each file's record.
rule folder_provenance:
    input:
        files=lambda w: (
            expand("results/tables/{dataset}.{ext}", dataset=DATASETS, ext=("md", "tex", "csv", "html"))
            + expand("results/tables/{dataset}_{table}.{ext}", dataset=DATASETS, table=("table2_networks", "table3_sampling"), ext=("md", "tex", "csv", "html"))
            + expand("results/tables/{dataset}_claims.{ext}", dataset=DATASETS, ext=("md", "csv", "html"))
            if w.folder == "tables"
            else [f for png in available_figures() for f in (png, png[: -len(".png")] + ".pdf")]
        ),
        code=code("metrics.folder_provenance"),
    output:
        "results/{folder}/provenance.json",
    wildcard_constraints:
        folder="tables|figures",
    params:
        settings=settings(lambda w: science_config()),
    log:
        log("folder_provenance", "{folder}"),
    benchmark:
        bench("folder_provenance", "{folder}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m diracbench.metrics.folder_provenance --settings {params.settings:q} --files {input.files:q} "
        "--out {output:q} > {log:q} 2>&1"


FINAL_TARGETS.append(evaluation_targets)
