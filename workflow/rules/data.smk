# Dataset preparation and the shared noisy measurements.

import diracbench.data_resources as data_sizing

_SOURCE_FILES = {}


def source_files(dataset):
    """Folder datasets: {"source_files": digest of every split's files (names, sizes, mtimes)}.

    Part of prepare_data's settings, so an image replaced, added or deleted reruns prepare_data
    and what depends on it (see diracbench.data.sources for the DAG-time cost). The embedded
    photos dataset has no folders: nothing is added, its settings stay as they were. The listing
    also gives the training split's size, so a batch larger than it is refused here.
    """
    ds = config["datasets"][dataset]
    if ds["source"]["kind"] != "folders":
        return {}
    if dataset not in _SOURCE_FILES:
        from diracbench.configcheck import batch_size_problems
        from diracbench.data.sources import source_digest

        digest = source_digest(dataset, ds["source"])
        train = digest["counts"]["train"]
        problems = batch_size_problems(config, {dataset: train}) if train is not None else []
        if problems:
            raise WorkflowError("invalid configuration: " + problems[0])
        _SOURCE_FILES[dataset] = {"source_files": digest}
    return _SOURCE_FILES[dataset]


def prior_training_list(dataset):
    """The published prior's training-image list, checked against val/test by prepare_data.

    Only when configured (nothing is added otherwise); its content hash is part of the settings,
    so editing the list reruns the check.
    """
    entry = config["prior"]["pretrained"].get(dataset, {})
    if "training_images" not in entry:
        return {}
    path = Path(entry["training_images"])
    if not path.is_file():
        raise WorkflowError(f"config key prior.pretrained.{dataset}.training_images: {path} does not exist; fix the path or remove the key")
    import hashlib

    return {"prior_training_images": str(path), "prior_training_images_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}



rule prepare_data:
    input:
        code=code("data.__main__"),
    output:
        **{f"{split}": f"results/{{dataset}}/data/{split}.npy" for split in ("train", "val", "test")},
        **{f"{split}_manifest": f"results/{{dataset}}/data/{split}_manifest.csv" for split in ("train", "val", "test")},
    params:
        settings=settings(lambda w: {"name": w.dataset, "seed": config["seed"], **config["datasets"][w.dataset], **source_files(w.dataset), **prior_training_list(w.dataset)}),
        out_dir=folder_of("val"),
    log:
        log("prepare_data", "{dataset}"),
    benchmark:
        bench("prepare_data", "{dataset}")
    conda:
        "../../envs/torch.yaml"
    # Images stream to disk (bounded memory, a constant request); the walltime grows with the
    # number of images, counted in the configured folders when the job has to run.
    threads: lambda w: data_sizing.prepare_threads(config["datasets"][w.dataset])
    resources:
        mem_mb=data_sizing.PREPARE_MEM_MB,
        runtime=lambda w, threads: data_sizing.prepare_runtime_min(config["datasets"][w.dataset], threads),
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
                "dataset": w.dataset,
                "task": w.task,
                "seed": config["seed"],
                "image_size": config["datasets"][w.dataset]["image_size"],
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
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m diracbench.measure --settings {params.settings:q} --data-dir {params.data_dir:q} "
        "--out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    expand(rules.measure.output.test, dataset=DATASETS, task=TASKS)
)
