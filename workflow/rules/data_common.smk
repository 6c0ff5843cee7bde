# Helpers of workflow/rules/data.smk (kept apart so rule files hold rules only).

import diracbench.data_resources as data_sizing

_SOURCE_FILES = {}


def source_files(dataset):
    """Folder datasets: {"source_files": digest of every split's files (names, sizes, mtimes)}.

    Part of prepare_data's settings, so an image replaced, added or deleted reruns prepare_data
    and what depends on it (see diracbench.data.sources for the DAG-time cost). The embedded
    photos dataset has no folders: nothing is added, its settings stay as they were. The listing
    also gives the training split's size, so a batch larger than it is refused here.
    """
    ds = dataset_config(dataset)
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
    entry = config["prior"]["pretrained"].get(base_dataset(dataset), {})
    if "training_images" not in entry:
        return {}
    path = Path(entry["training_images"])
    if not path.is_file():
        raise WorkflowError(f"config key prior.pretrained.{dataset}.training_images: {path} does not exist; fix the path or remove the key")
    import hashlib

    return {"prior_training_images": str(path), "prior_training_images_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
