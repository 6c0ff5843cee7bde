# The `ablations` target: the paper's Figs. 8-9 on the val split. Not part of `all`.
#
# results/<ds>/<task>/ablations/guidance/{chosen.yaml,grid.csv,trajectory.csv}  (ablation_guidance)
# results/<ds>/<task>/ablations/lookahead/{scores.csv,samples.npz}               (ablation_lookahead)
# results/<ds>/<task>/ablations/lookahead/path/{chosen.yaml,grid.csv,trajectory.csv} (ablation_lookahead_path)
# results/figures/<ds>_<task>_fig8_guidance.{png,pdf}, <ds>_<task>_fig9_lookahead.{png,pdf}
#
# Reuses the default's Dirac models and tuning: a Δt the default trains is not trained again, and
# Fig. 9 samples every Δt model with the default's chosen.yaml (only the model changes). Each
# additional Δt trains one more model per task with the same recipe (train_dirac).

include: "ablations_common.smk"


rule ablation_guidance:
    input:
        unpack(dirac_models),
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/val.npz",
        schedule=rules.schedule.output.table,
        code=code("tune", *method_modules(DIRAC_METHODS)),
    output:
        chosen="results/{dataset}/{task}/ablations/guidance/chosen.yaml",
        grid="results/{dataset}/{task}/ablations/guidance/grid.csv",
        trajectory="results/{dataset}/{task}/ablations/guidance/trajectory.csv",
    params:
        device=gpu_device,
        settings=settings(ablation_guidance_settings),
        models=dirac_model_args,
    log:
        log("ablation_guidance", "{dataset}_{task}"),
    benchmark:
        bench("ablation_guidance", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=planned("ablation", "gpu", 1),
    shell:
        "python -m diracbench.tune --method dirac-po --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} {params.models} "
        "--input schedule={input.schedule:q} --out-chosen {output.chosen:q} --out-grid {output.grid:q} "
        "--out-trajectory {output.trajectory:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule ablation_lookahead:
    input:
        unpack(ablation_models),
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/val.npz",
        schedule=rules.schedule.output.table,
        chosen=rules.tune_dirac.output.chosen,
        code=code("ablations", *method_modules(DIRAC_METHODS)),
    output:
        scores="results/{dataset}/{task}/ablations/lookahead/scores.csv",
        samples="results/{dataset}/{task}/ablations/lookahead/samples.npz",
    params:
        device=gpu_device,
        settings=settings(ablation_lookahead_settings),
        models=dirac_model_args,
    log:
        log("ablation_lookahead", "{dataset}_{task}"),
    benchmark:
        bench("ablation_lookahead", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=planned("ablation", "gpu", 1),
    shell:
        "python -m diracbench.ablations lookahead --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --chosen {input.chosen:q} {params.models} --input schedule={input.schedule:q} "
        "--out-scores {output.scores:q} --out-samples {output.samples:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


# Fig. 9 again with every Δt model's own t_stop: the default's tuned t_stop belongs to its model
# (deblurring: t = 1, one step), where a Δt = 0 model is worst; the tuning search over model_dt
# gives each model its best point along the path on the same val images.
use rule ablation_guidance as ablation_lookahead_path with:
    input:
        unpack(ablation_models),
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/val.npz",
        schedule=rules.schedule.output.table,
        code=code("tune", *method_modules(DIRAC_METHODS)),
    output:
        chosen="results/{dataset}/{task}/ablations/lookahead/path/chosen.yaml",
        grid="results/{dataset}/{task}/ablations/lookahead/path/grid.csv",
        trajectory="results/{dataset}/{task}/ablations/lookahead/path/trajectory.csv",
    params:
        device=gpu_device,
        settings=settings(ablation_path_settings),
        models=dirac_model_args,
    log:
        log("ablation_lookahead_path", "{dataset}_{task}"),
    benchmark:
        bench("ablation_lookahead_path", "{dataset}_{task}")


rule figure_ablation_guidance:
    input:
        grid=rules.ablation_guidance.output.grid,
        code=code("ablations"),
    output:
        png="results/figures/{dataset}_{task}_fig8_guidance.png",
        pdf="results/figures/{dataset}_{task}_fig8_guidance.pdf",
    params:
        title="{dataset} {task}: guidance step size (val, PO)",
        out_stem=lambda w, output: os.path.splitext(output.png)[0],
    log:
        log("figure_ablation", "{dataset}_{task}_fig8"),
    benchmark:
        bench("figure_ablation", "{dataset}_{task}_fig8")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m diracbench.ablations figure-guidance --grid {input.grid:q} --title {params.title:q} "
        "--out-stem {params.out_stem:q} > {log:q} 2>&1"


rule figure_ablation_lookahead:
    input:
        scores=rules.ablation_lookahead.output.scores,
        samples=rules.ablation_lookahead.output.samples,
        path=rules.ablation_lookahead_path.output.grid,
        code=code("ablations"),
    output:
        png="results/figures/{dataset}_{task}_fig9_lookahead.png",
        pdf="results/figures/{dataset}_{task}_fig9_lookahead.pdf",
    params:
        title="{dataset} {task}: loss look-ahead Δt (val; solid: the default's tuned sampler, dashed: each model's own t_stop)",
        out_stem=lambda w, output: os.path.splitext(output.png)[0],
    log:
        log("figure_ablation", "{dataset}_{task}_fig9"),
    benchmark:
        bench("figure_ablation", "{dataset}_{task}_fig9")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m diracbench.ablations figure-lookahead --scores {input.scores:q} --samples {input.samples:q} --path-grid {input.path:q} "
        "--title {params.title:q} --out-stem {params.out_stem:q} > {log:q} 2>&1"


rule ablations:
    input:
        expand(rules.figure_ablation_guidance.output.png, dataset=DATASETS, task=TASKS) if DIRAC_VARIANTS else [],
        expand(rules.figure_ablation_lookahead.output.png, dataset=DATASETS, task=TASKS) if DIRAC_VARIANTS else [],
