# Helpers of workflow/rules/methods.smk (kept apart so rule files hold rules only).
#
# Everything a generic method job needs comes from the method's registry entry (METHOD_SPECS in
# its module, diracbench/methods/registry.py) and its config section (with the entry's defaults).

GENERIC_METHODS = [m for m, s in METHOD_SPECS.items() if s.rules == "generic"]


def methods_in_env(env):
    """Registered generic methods of one environment (a rule's {method} wildcard constraint)."""
    names = [m for m in GENERIC_METHODS if METHOD_SPECS[m].env == env]
    # A pattern that matches nothing when an environment has no method, so the rule stays valid.
    return "|".join(map(re.escape, names)) or "(?!)"


def method_settings(method, split, wildcards):
    """Settings of a method's tuning job (split val) or sampling job (split test)."""
    spec, cfg = METHOD_SPECS[method], method_config(method)
    hparams = dict(cfg["hparams"])
    if "prior" in spec.inputs:
        hparams["prior"] = prior_info(wildcards.dataset)
    out = {"hparams": hparams, "max_images": cfg["max_images"][split], "seed": config["seed"]}
    if split == "val":
        out.update(grid=cfg["grid"][wildcards.task], objective=cfg["objective"], lpips=lpips_settings())
    elif cfg.get("trajectory") is not None:
        hparams["trajectory"] = {**cfg["trajectory"], "lpips": lpips_settings()}
    return out


def method_inputs(wildcards):
    """Named inputs from the registry entry's `inputs` (e.g. the DDPM prior's weights)."""
    files = {}
    for kind in METHOD_SPECS[wildcards.method].inputs:
        if kind == "prior":
            files["prior"] = prior_weights(wildcards)
    return files


def method_input_args(wildcards, input):
    return " ".join(f"--input {shlex.quote(f'{name}={input[name]}')}" for name in METHOD_SPECS[wildcards.method].inputs)


def method_device(wildcards, threads):
    """--device of a method's jobs: its registry entry's (scico: cpu), or the config's `device`
    for `auto` entries. Takes `threads` so that, like gpu_device, it is no params rerun trigger."""
    device = METHOD_SPECS[wildcards.method].device
    return gpu_device(wildcards, threads) if device == "auto" else device


def method_resource(stage, key):
    return lambda wildcards: METHOD_SPECS[wildcards.method].job_resources(stage)[key]


# The scico adapter of every operator kind (operators/<name>_scico.py, loaded by name through the
# operator registry): code inputs of the scico methods' jobs, and of theirs only.
SCICO_ADAPTERS = sorted(f"diracbench.operators.{p.stem}" for p in (SRC / "diracbench" / "operators").glob("*_scico.py"))


def method_code(stage):
    """The stage's CLI and the method's module (loaded by name at run time, so named here)."""

    def files(wildcards):
        spec = METHOD_SPECS[wildcards.method]
        return code(stage, spec.module, *(SCICO_ADAPTERS if spec.env == "scico" else ()))

    return files


TUNE_SHARD = "results/{dataset}/{task}/{method}/tuning/shards/{shard}-of-{shards}.npz"


def tune_shard_count(wildcards):
    """Shards of a grid tuning job (cluster.shard_size.tune_<method>: DPS, DDRM; else 1)."""
    try:
        return planner.tune_shards(PLAN_CONFIG, wildcards.method, wildcards.task, base_dataset(wildcards.dataset))
    except planner.PlanError:
        return 1


def tune_shard_files(wildcards):
    """With more than one shard, the tuning job gathers these (and scores the grid)."""
    n = tune_shard_count(wildcards)
    return [] if n == 1 else shard_paths(TUNE_SHARD, n, **dict(wildcards.items()))


def tune_gather_args(wildcards, input):
    return shards_arg(input.shards)
