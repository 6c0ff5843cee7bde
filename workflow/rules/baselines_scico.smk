# Classical baselines in scico/JAX: PnP-ADMM with the shipped DnCNN, and ADMM-TV.
#
# results/<ds>/<task>/<pnp-admm|admm-tv>/tuning/{chosen.yaml,grid.csv}     (tune_*: val split)
# results/<ds>/<task>/<pnp-admm|admm-tv>/recon/{test.npz,trajectory.csv}   (sample_*: test split)
#
# Both read the shared measurements/{val,test}.npz and exchange data with the torch stages only
# through files. They need no GPU and no weights file (DnCNN's weights ship inside scico).

SCICO_BASELINES = [m for m in ("pnp-admm", "admm-tv") if m in METHODS]
SCICO_CODE = ("scico_ops.py", "operators", "methods/__init__.py", "methods/base.py", "seeding.py", "runtime.py", "train.py")
TUNE_CODE = ("tune.py", "metrics/__init__.py", "metrics/perceptual.py", "metrics/backbones.py")


# Settings of tune_<method> (val split; the task's grid is added per job) and sample_<method> (test).
SCICO_TUNE = {
    m: {
        "hparams": config[m]["hparams"],
        "max_images": config[m]["max_images"]["val"],
        "seed": config["seed"],
        "objective": config[m]["objective"],
        "lpips": {"net": config["metrics"]["lpips_net"], "upsample_below": config["metrics"]["lpips_upsample_below"]},
    }
    for m in SCICO_BASELINES
}
SCICO_SAMPLE = {m: {"hparams": config[m]["hparams"], "max_images": config[m]["max_images"]["test"], "seed": config["seed"]} for m in SCICO_BASELINES}
for _m in SCICO_BASELINES:
    for _task in TASKS:
        if _task not in config[_m]["grid"]:
            raise WorkflowError(f"config key {_m}.grid lacks the task {_task!r}; give the values to search on val")


rule tune_pnp_admm:
    input:
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/val.npz",
        code=code("methods/pnp_admm.py", *SCICO_CODE, *TUNE_CODE),
    output:
        chosen="results/{dataset}/{task}/pnp-admm/tuning/chosen.yaml",
        grid="results/{dataset}/{task}/pnp-admm/tuning/grid.csv",
    params:
        settings=settings(lambda w: {**SCICO_TUNE["pnp-admm"], "grid": config["pnp-admm"]["grid"][w.task]}),
    log:
        log("tune_pnp_admm", "{dataset}_{task}"),
    benchmark:
        bench("tune_pnp_admm", "{dataset}_{task}")
    conda:
        "../../envs/scico.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "python -m diracbench.tune --method pnp-admm --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --out-chosen {output.chosen:q} --out-grid {output.grid:q} "
        "--device cpu --threads {threads} > {log:q} 2>&1"


rule sample_pnp_admm:
    input:
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/test.npz",
        chosen=rules.tune_pnp_admm.output.chosen,
        code=code("sample.py", "contracts.py", "methods/pnp_admm.py", *SCICO_CODE),
    output:
        recon="results/{dataset}/{task}/pnp-admm/recon/test.npz",
        trajectory="results/{dataset}/{task}/pnp-admm/recon/trajectory.csv",
    params:
        settings=settings(lambda w: SCICO_SAMPLE["pnp-admm"]),
    log:
        log("sample_pnp_admm", "{dataset}_{task}"),
    benchmark:
        bench("sample_pnp_admm", "{dataset}_{task}")
    conda:
        "../../envs/scico.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "python -m diracbench.sample --method pnp-admm --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --tuned {input.chosen:q} "
        "--out {output.recon:q} --trajectory {output.trajectory:q} --device cpu --threads {threads} > {log:q} 2>&1"


rule tune_admm_tv:
    input:
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/val.npz",
        code=code("methods/admm_tv.py", *SCICO_CODE, *TUNE_CODE),
    output:
        chosen="results/{dataset}/{task}/admm-tv/tuning/chosen.yaml",
        grid="results/{dataset}/{task}/admm-tv/tuning/grid.csv",
    params:
        settings=settings(lambda w: {**SCICO_TUNE["admm-tv"], "grid": config["admm-tv"]["grid"][w.task]}),
    log:
        log("tune_admm_tv", "{dataset}_{task}"),
    benchmark:
        bench("tune_admm_tv", "{dataset}_{task}")
    conda:
        "../../envs/scico.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "python -m diracbench.tune --method admm-tv --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --out-chosen {output.chosen:q} --out-grid {output.grid:q} "
        "--device cpu --threads {threads} > {log:q} 2>&1"


rule sample_admm_tv:
    input:
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/test.npz",
        chosen=rules.tune_admm_tv.output.chosen,
        code=code("sample.py", "contracts.py", "methods/admm_tv.py", *SCICO_CODE),
    output:
        recon="results/{dataset}/{task}/admm-tv/recon/test.npz",
        trajectory="results/{dataset}/{task}/admm-tv/recon/trajectory.csv",
    params:
        settings=settings(lambda w: SCICO_SAMPLE["admm-tv"]),
    log:
        log("sample_admm_tv", "{dataset}_{task}"),
    benchmark:
        bench("sample_admm_tv", "{dataset}_{task}")
    conda:
        "../../envs/scico.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "python -m diracbench.sample --method admm-tv --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --tuned {input.chosen:q} "
        "--out {output.recon:q} --trajectory {output.trajectory:q} --device cpu --threads {threads} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    expand("results/{dataset}/{task}/{method}/recon/test.npz", dataset=DATASETS, task=TASKS, method=SCICO_BASELINES)
)
