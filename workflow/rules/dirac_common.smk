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


def searched_model_dts(task, variant):
    """The look-aheads a variant may use: its model_dt and those its search space lists."""
    cfg = dirac_task(task)
    return [cfg[variant]["model_dt"]] + list(cfg.get("search", {}).get(variant, {}).get("model_dt", []))


for _task in ALL_TASKS if DIRAC_VARIANTS else []:
    _cfg = dirac_task(_task)
    for _v in ("po", "do"):
        if _cfg[_v]["model_dt"] not in _cfg["look_aheads"]:
            raise WorkflowError(f"config key dirac.tasks.{_task}.{_v}.model_dt {_cfg[_v]['model_dt']} is not among dirac.tasks.{_task}.look_aheads {_cfg['look_aheads']}")
        for _dt in searched_model_dts(_task, _v)[1:]:
            if _dt not in _cfg["look_aheads"]:
                raise WorkflowError(f"config key dirac.tasks.{_task}.search.{_v}.model_dt lists {_dt}, which is not among dirac.tasks.{_task}.look_aheads {_cfg['look_aheads']}")


def schedule_file(wildcards):
    cfg = config["tasks"][wildcards.task]["schedule"]
    if cfg["kind"] != "from_file":
        return {}
    path = Path(cfg["file"])
    # Relative to the working directory, like code(): a moved checkout must not rerun the jobs.
    return {"file": str(path) if path.is_absolute() else os.path.relpath(Path(workflow.basedir) / path)}


def dirac_train_settings(wildcards):
    dt = float(wildcards.dt)
    # The ablations target (ablations.look_aheads) trains further models with the same recipe.
    allowed = [float(v) for v in dirac_task(wildcards.task)["look_aheads"] + ABLATIONS["look_aheads"]]
    if dt not in allowed:
        raise WorkflowError(f"no Dirac model with look-ahead {dt} is configured for {wildcards.task} (dirac.tasks.{wildcards.task}.look_aheads or ablations.look_aheads)")
    training = {**science_training(dirac_training(wildcards)), "seed": training_seed(wildcards.dataset)}
    return {
        "network": training["network"],
        "image_size": dataset_config(wildcards.dataset)["image_size"],
        "training": training,
        "loss": {"dt": dt, **config["dirac"]["loss"]},
    }


def dirac_models(wildcards, variants=("po", "do")):
    dts = sorted({float(dt) for v in variants for dt in searched_model_dts(wildcards.task, v)})
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


def dirac_search(task):
    """The tune_dirac settings entry of the task's search space (absent when there is none, so
    that configs without one keep their params, and their jobs are not rerun)."""
    search = dirac_task(task).get("search") or {}
    return {"search": search} if search else {}


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
