# Helpers of workflow/rules/baselines_diffusion.smk (kept apart so rule files hold rules only).

DIFFUSION_BASELINES = [m for m in ("dps", "ddrm") if m in METHODS]
PRIOR_CODE = ("prior", "nn", "operators", "methods/__init__.py", "methods/base.py", "metrics/__init__.py", "metrics/perceptual.py", "metrics/backbones.py", "seeding.py", "runtime.py", "train.py")

for _ds in config["prior"]["pretrained"]:
    if _ds not in DATASETS:
        raise WorkflowError(f"config key prior.pretrained.{_ds} names no configured dataset (datasets: {DATASETS})")
    _pre = config["prior"]["pretrained"][_ds]
    if config["datasets"][_ds]["image_size"] != 256:  # every published format is a 256 px model
        raise WorkflowError(f"config key prior.pretrained.{_ds}: the {_pre['format']} checkpoint is a 256 px model but datasets.{_ds}.image_size is {config['datasets'][_ds]['image_size']}")
    if DIFFUSION_BASELINES and not Path(_pre["path"]).is_file():
        raise WorkflowError(f"config key prior.pretrained.{_ds}.path: {_pre['path']} does not exist; place the {_pre['format']} checkpoint there (see README, 'Published priors') or remove the entry to train a prior")


def prior_weights(wildcards):
    pre = config["prior"]["pretrained"].get(wildcards.dataset)
    return pre["path"] if pre else f"results/{wildcards.dataset}/prior/weights.pt"


def prior_info(dataset):
    """What a sampler needs to load the prior: its format and the DDPM schedule."""
    pre = config["prior"]["pretrained"].get(dataset)
    schedule = {k: config["prior"][k] for k in ("beta_start", "beta_end", "num_timesteps")}
    return {"format": pre["format"] if pre else "diracbench", **schedule}


def diffusion_lpips():
    return {"net": config["metrics"]["lpips_net"], "upsample_below": config["metrics"]["lpips_upsample_below"]}


def diffusion_grid(method, task):
    grids = config[method]["grid"]
    if task not in grids:
        raise WorkflowError(f"config key {method}.grid lacks the task {task!r}; give its values to search (or {{}} for none)")
    return grids[task]


def diffusion_settings(method, split):
    """Settings of tune_<method> (split val) and sample_<method> (split test)."""

    def build(w):
        cfg = config[method]
        hparams = {**cfg["hparams"], "prior": prior_info(w.dataset)}
        out = {"hparams": hparams, "max_images": cfg["max_images"][split], "seed": config["seed"]}
        if split == "val":
            out.update(grid=diffusion_grid(method, w.task), objective=cfg["objective"], lpips=diffusion_lpips())
        else:
            hparams["trajectory"] = {**cfg["trajectory"], "lpips": diffusion_lpips()}
        return out

    return build
