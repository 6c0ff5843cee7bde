# Helpers of workflow/rules/dirac.smk (kept apart so rule files hold rules only).
import shlex

include: "training_common.smk"

# Methods run by the Dirac rules (registry entries with rules: dirac): dirac-<variant>.
DIRAC_METHODS = [m for m, s in METHOD_SPECS.items() if s.rules == "dirac"]
DIRAC_VARIANTS_ALL = [m.split("-", 1)[1] for m in DIRAC_METHODS]
DIRAC_VARIANTS = [m.split("-", 1)[1] for m in METHODS if m in DIRAC_METHODS]


def dirac_task(task):
    tasks = config["dirac"]["tasks"]
    if task not in tasks:
        raise WorkflowError(f"config key dirac.tasks lacks {task!r}; add its look_aheads and po/do sampler settings")
    return tasks[task]


def dt_name(dt):
    """The folder suffix of a look-ahead (1.0 -> '1', 0.5 -> '0.5')."""
    return f"{float(dt):g}"


def model_path(wildcards, dt):
    return f"results/{wildcards.dataset}/{wildcards.task}/models/dirac-dt{dt_name(dt)}/weights.pt"


for _task in TASKS if DIRAC_VARIANTS else []:
    _cfg = dirac_task(_task)
    for _v in ("po", "do"):
        if _cfg[_v]["model_dt"] not in _cfg["look_aheads"]:
            raise WorkflowError(f"config key dirac.tasks.{_task}.{_v}.model_dt {_cfg[_v]['model_dt']} is not among dirac.tasks.{_task}.look_aheads {_cfg['look_aheads']}")


def schedule_file(wildcards):
    cfg = config["tasks"][wildcards.task]["schedule"]
    if cfg["kind"] != "from_file":
        return {}
    path = Path(cfg["file"])
    # Relative to the working directory, like code(): a moved checkout must not rerun the jobs.
    return {"file": str(path) if path.is_absolute() else os.path.relpath(Path(workflow.basedir) / path)}


def dirac_train_settings(wildcards):
    dt = float(wildcards.dt)
    if dt not in [float(v) for v in dirac_task(wildcards.task)["look_aheads"]]:
        raise WorkflowError(f"no Dirac model with look-ahead {dt} is configured for {wildcards.task} (dirac.tasks.{wildcards.task}.look_aheads)")
    training = {**science_training(dirac_training(wildcards)), "seed": config["seed"]}
    return {
        "network": training["network"],
        "image_size": config["datasets"][wildcards.dataset]["image_size"],
        "training": training,
        "loss": {"dt": dt, **config["dirac"]["loss"]},
    }


def dirac_models(wildcards, variants=("po", "do")):
    cfg = dirac_task(wildcards.task)
    dts = sorted({float(cfg[v]["model_dt"]) for v in variants})
    return {f"model_dt{dt_name(dt).replace('.', '_')}": model_path(wildcards, dt) for dt in dts}


def dirac_model_args(wildcards, input):
    """--input model-dt<dt>=PATH for every model input (names as methods.dirac.model_input_name)."""
    args = []
    for name in input.keys():
        if name.startswith("model_dt"):
            item = f"model-dt{name[len('model_dt'):].replace('_', '.')}={input[name]}"
            args.append(f"--input {shlex.quote(item)}")
    return " ".join(args)


def dirac_variant_settings(task, variant):
    cfg = dirac_task(task)
    return {**cfg[variant], "variant": variant}


def dirac_sample_settings(wildcards):
    sampling = config["dirac"]["sampling"]
    return {
        "max_images": sampling["max_images"],
        "seed": config["seed"],
        "hparams": {
            **dirac_variant_settings(wildcards.task, wildcards.variant),
            "batch_size": sampling["batch_size"],
            "lpips_every": sampling["lpips_every"],
            "lpips": lpips_settings(),
            "posterior_images": sampling["posterior_images"],
            "posterior_samples": sampling["posterior_samples"],
            "posterior_t_stop": sampling["posterior_t_stop"],
        },
    }
