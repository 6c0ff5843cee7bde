# Dataset preparation and the shared noisy measurements.

include: "data_common.smk"


rule prepare_data:
    input:
        code=code("data.__main__"),
    output:
        **{f"{split}": f"results/{{dataset}}/data/{split}.npy" for split in ("train", "val", "test")},
        **{f"{split}_manifest": f"results/{{dataset}}/data/{split}_manifest.csv" for split in ("train", "val", "test")},
    params:
        settings=settings(lambda w: {"name": base_dataset(w.dataset), "seed": config["seed"], **dataset_config(w.dataset), **source_files(w.dataset), **prior_training_list(w.dataset)}),
        out_dir=folder_of("val"),
    log:
        log("prepare_data", "{dataset}"),
    benchmark:
        bench("prepare_data", "{dataset}")
    conda:
        "../../envs/torch.yaml"
    # Images stream to disk (bounded memory, a constant request); the walltime grows with the
    # number of images, counted in the configured folders when the job has to run.
    threads: lambda w: data_sizing.prepare_threads(dataset_config(w.dataset))
    resources:
        mem_mb=data_sizing.PREPARE_MEM_MB,
        runtime=lambda w, threads: data_sizing.prepare_runtime_min(dataset_config(w.dataset), threads),
    shell:
        "python -m diracbench.data --settings {params.settings:q} --out-dir {params.out_dir:q} "
        "--threads {threads} > {log:q} 2>&1"


rule measure:
    input:
        val=rules.prepare_data.output.val,
        test=rules.prepare_data.output.test,
        val_manifest=rules.prepare_data.output.val_manifest,
        test_manifest=rules.prepare_data.output.test_manifest,
        code=code("measure"),
    output:
        operator="results/{dataset}/{task}/operator.json",
        val="results/{dataset}/{task}/measurements/val.npz",
        test="results/{dataset}/{task}/measurements/test.npz",
    params:
        settings=settings(
            lambda w: {
                "dataset": base_dataset(w.dataset),  # noise seeds: a seeds replicate measures what its dataset does
                "task": w.task,
                "seed": config["seed"],
                "image_size": dataset_config(w.dataset)["image_size"],
                "operator": config["tasks"][w.task]["operator"],
                "noise": config["noise"],
            }
        ),
        data_dir=folder_of("val", "input"),
        out_dir=folder_of("operator"),
    log:
        log("measure", "{dataset}_{task}"),
    benchmark:
        bench("measure", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    # First in line with the schedules and trainings it feeds (rule schedule): without it, one
    # task's measurements waited behind baseline jobs and its 2000-step training started 8 min late.
    priority: TRAINING_PRIORITY
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m diracbench.measure --settings {params.settings:q} --data-dir {params.data_dir:q} "
        "--out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    expand(rules.measure.output.test, dataset=DATASETS, task=TASKS)
)
