# Helpers of workflow/rules/science.smk (kept apart so rule files hold rules only).
from diracbench.tables_hparams import expected_inputs as hparams_inputs, hparams_settings


def named_input_args(names_paths):
    return " ".join(f"--input {k}={shlex.quote(str(v))}" for k, v in names_paths.items())


def hparams_input_args(wildcards):
    return named_input_args(hparams_inputs(CORE_CONFIG, wildcards.dataset))


def claims_input_args(wildcards, input):
    return named_input_args({k: input[k] for k in input.keys() if k != "code"})


def claims_inputs(wildcards):
    """TASK__KIND[__METHOD] -> path of what the claims read (configured methods only)."""
    ds = wildcards.dataset
    out = {}
    for task in TASKS:
        tdir = f"results/{ds}/{task}"
        for m in ("dirac-po", "dirac-do", "dps"):
            if m in METHODS:
                out[f"{task}__aggregate__{m}"] = f"{tdir}/{m}/metrics/aggregate.csv"
        for m in ("dirac-po", "dps"):
            if m in METHODS:
                out[f"{task}__per_image__{m}"] = f"{tdir}/{m}/metrics/per_image.csv"
        if DIRAC_VARIANTS:
            out[f"{task}__val_trajectory"] = f"{tdir}/dirac/tuning/trajectory.csv"
        if "dirac-po" in METHODS:
            out[f"{task}__test_trajectory__dirac_po"] = f"{tdir}/dirac-po/recon/trajectory.csv"
        if "dps" in METHODS:
            out[f"{task}__test_trajectory__dps"] = f"{tdir}/dps/recon/trajectory.csv"
    return out
