# The `extended` target: the tasks and methods the config's `extended:` section names (the
# embedded default: 4x super-resolution and DiffPIR), added to copies of Table 1 and the figures.
# Not part of `all`; it reuses every job of `all` and runs only what the additions need.
#
# results/extended/tables/<ds>.{md,tex,csv,html}     Table 1 over every configured task and method
# results/extended/figures/<ds>_<task>_<name>.{png,pdf}, <ds>_fig7_schedules.{png,pdf}
#
# Reconstructions, metrics and models keep the public layout (results/<ds>/<task>/<method>/...),
# so a method or task moved from `extended:` into the main lists reuses all of them.

EXTENDED_TABLES = "results/extended/tables"
EXTENDED_FIGURES = "results/extended/figures"


use rule tables as tables_extended with:
    input:
        aggregates=lambda w: table_aggregates(w, ALL_TASKS, ALL_METHODS),
        code=code("tables"),
    output:
        md=f"{EXTENDED_TABLES}/{{dataset}}.md",
        tex=f"{EXTENDED_TABLES}/{{dataset}}.tex",
        csv=f"{EXTENDED_TABLES}/{{dataset}}.csv",
        html=report(
            f"{EXTENDED_TABLES}/{{dataset}}.html",
            caption="../report/table.rst",
            category="Table 1 (extended)",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "Table 1 with the extended tasks and methods"},
        ),
    params:
        settings=settings(lambda w: {"dataset": w.dataset, "tasks": ALL_TASKS, "methods": ALL_METHODS, "seed": config["seed"], "method_labels": method_labels(ALL_METHODS)}),
        out_stem=lambda w, output: os.path.splitext(output.csv)[0],
    log:
        log("tables_extended", "{dataset}"),
    benchmark:
        bench("tables_extended", "{dataset}")


use rule figure as figure_extended with:
    input:
        unpack(lambda w: figure_inputs(FIGURE_OF[w.name], w.dataset, w.task, ALL_TASKS, ALL_METHODS)),
        code=code("figures"),
    output:
        png=report(
            f"{EXTENDED_FIGURES}/{{dataset}}_{{task}}_{{name}}.png",
            caption="../report/figure.rst",
            category="Figures (extended)",
            subcategory="{dataset} {task}",
            labels={"dataset": "{dataset}", "task": "{task}", "figure": "{name}"},
        ),
        pdf=f"{EXTENDED_FIGURES}/{{dataset}}_{{task}}_{{name}}.pdf",
    params:
        figure=lambda w: FIGURE_OF[w.name],
        settings=settings(lambda w: figure_settings(w, ALL_METHODS)),
        inputs=figure_args,
        out_stem=lambda w, output: os.path.splitext(output.png)[0],
    log:
        log("figure_extended", "{dataset}_{task}_{name}"),
    benchmark:
        bench("figure_extended", "{dataset}_{task}_{name}")


use rule figure_schedules as figure_schedules_extended with:
    input:
        unpack(lambda w: figure_inputs("schedules", w.dataset, None, ALL_TASKS, ALL_METHODS)),
        code=code("figures"),
    output:
        png=report(
            f"{EXTENDED_FIGURES}/{{dataset}}_fig7_schedules.png",
            caption="../report/figure.rst",
            category="Figures (extended)",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "task": "all", "figure": "fig7_schedules"},
        ),
        pdf=f"{EXTENDED_FIGURES}/{{dataset}}_fig7_schedules.pdf",
    params:
        settings=settings(lambda w: {**figure_settings(w, ALL_METHODS), "schedules": schedule_sources(ALL_TASKS)}),
        inputs=figure_args,
        out_stem=lambda w, output: os.path.splitext(output.png)[0],
    log:
        log("figure_extended", "{dataset}_fig7_schedules"),
    benchmark:
        bench("figure_extended", "{dataset}_fig7_schedules")


rule extended:
    input:
        lambda w: expand(f"{EXTENDED_TABLES}/{{dataset}}.md", dataset=DATASETS) + available_figures(EXTENDED_FIGURES, ALL_TASKS, ALL_METHODS),
