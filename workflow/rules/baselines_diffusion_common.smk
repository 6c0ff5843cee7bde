# Helpers of workflow/rules/baselines_diffusion.smk (kept apart so rule files hold rules only).

# Configured methods that sample with the DDPM prior (registry entries with inputs: [prior]).
PRIOR_METHODS = [m for m in ALL_METHODS if "prior" in METHOD_SPECS[m].inputs]

for _ds in config["prior"]["pretrained"]:
    if _ds not in DATASETS:
        raise WorkflowError(f"config key prior.pretrained.{_ds} names no configured dataset (datasets: {DATASETS})")
    _pre = config["prior"]["pretrained"][_ds]
    if dataset_config(_ds)["image_size"] != 256:  # every published format is a 256 px model
        raise WorkflowError(f"config key prior.pretrained.{_ds}: the {_pre['format']} checkpoint is a 256 px model but datasets.{_ds}.image_size is {config['datasets'][_ds]['image_size']}")
    if PRIOR_METHODS and not Path(_pre["path"]).is_file():
        raise WorkflowError(f"config key prior.pretrained.{_ds}.path: {_pre['path']} does not exist; place the {_pre['format']} checkpoint there (see README, 'Published priors') or remove the entry to train a prior")


def prior_weights(wildcards):
    pre = config["prior"]["pretrained"].get(base_dataset(wildcards.dataset))
    return pre["path"] if pre else f"results/{wildcards.dataset}/prior/weights.pt"


def prior_info(dataset):
    """What a sampler needs to load the prior: its format and the DDPM schedule."""
    pre = config["prior"]["pretrained"].get(base_dataset(dataset))
    schedule = {k: config["prior"][k] for k in ("beta_start", "beta_end", "num_timesteps")}
    return {"format": pre["format"] if pre else "diracbench", **schedule}
