# Helpers of workflow/rules/seeds.smk (kept apart so rule files hold rules only).
from types import SimpleNamespace


def _learned(method):
    spec = METHOD_SPECS[method]
    return spec.rules == "dirac" or "prior" in spec.inputs


# Methods rebuilt per training seed: seeds.methods, or every method of `all` with a trained model.
SEED_METHODS = list(_SEEDS.get("methods") or [m for m in METHODS if _learned(m)])
FIXED_METHODS = [m for m in METHODS if m not in SEED_METHODS]
ALL_SEEDS = [config["seed"]] + list(_SEEDS.get("training", []))


def seed_dataset(dataset, seed):
    return dataset if seed == config["seed"] else f"{dataset}-seed{seed}"


def seeds_inputs(wildcards):
    """seed<N>__TASK__KIND[__METHOD] -> path: the claims' inputs and every seeded method's metrics
    per replicate, the measurements (checked equal), and the fixed methods' metrics of the main run."""
    out = {}
    for seed in ALL_SEEDS:
        name = seed_dataset(wildcards.dataset, seed)
        wanted = set(SEED_METHODS) if seed != config["seed"] else set(METHODS)
        dirac = any(METHOD_SPECS[m].rules == "dirac" for m in wanted)
        for key, path in claims_inputs(SimpleNamespace(dataset=name)).items():
            last = key.rsplit("__", 1)[-1]  # the method a claims input belongs to
            if (last == "val_trajectory" and dirac) or {"dirac_po": "dirac-po"}.get(last, last) in wanted:
                out[f"seed{seed}__{key}"] = path
        for task in TASKS:
            for m in sorted(wanted):
                out[f"seed{seed}__{task}__aggregate__{m}"] = f"results/{name}/{task}/{m}/metrics/aggregate.csv"
            for split in ("val", "test"):
                out[f"seed{seed}__{task}__measurements__{split}"] = f"results/{name}/{task}/measurements/{split}.npz"
    return out


def seeds_settings(wildcards):
    return {
        "dataset": wildcards.dataset,
        "tasks": TASKS,
        "methods": SEED_METHODS,
        "fixed_methods": FIXED_METHODS,
        "sigma_1": config["noise"]["sigma_max"],
        "seeds": ALL_SEEDS,
    }
