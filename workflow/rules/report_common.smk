# Helpers of workflow/rules/report.smk (kept apart so rule files hold rules only).
import shlex

from diracbench.metrics.registry import METRICS

REFERENCE = "y"  # the measurement itself, scored as a reference row


def figure_methods(kind, methods):
    """Methods (of `methods`) whose registry entry draws them in a figure kind, in registry order."""
    return [m for m in METHOD_SPECS if m in methods and kind in METHOD_SPECS[m].figures]


def metric_modules():
    """Modules that compute the registered metrics (loaded by name, so code() entries)."""
    return sorted({m.function.partition(":")[0] for m in METRICS.values()})


def method_labels(methods):
    """Display name and order of methods: a tables/figures setting, so renaming a method in its
    registry entry reruns the jobs that print the name."""
    return {m: [METHOD_SPECS[m].display, METHOD_SPECS[m].order] for m in methods if m in METHOD_SPECS}


def producible(path):
    """The file exists, or a rule in this workflow produces it."""
    return os.path.exists(path) or any(r.is_producer(path) for r in workflow.rules)


def _task_dir(dataset, task):
    return f"results/{dataset}/{task}"


def _recon(dataset, task, method, name="test.npz"):
    return f"{_task_dir(dataset, task)}/{method}/recon/{name}"


def _metrics(dataset, task, method, name="aggregate.csv"):
    return f"{_task_dir(dataset, task)}/{method}/metrics/{name}"


def _measured(name, dataset, task):
    """A file of the `measure` rule (operator, val, test) for one dataset and task."""
    return getattr(rules.measure.output, name).format(dataset=dataset, task=task)


def _dirac_tuning(dataset, task, name):
    return f"{_task_dir(dataset, task)}/dirac/tuning/{name}"


def _key(kind, method=None):
    # figures.py reads KIND__METHOD, with '-' written as '_' (input names must be identifiers).
    return kind if method is None else f"{kind}__{method.replace('-', '_')}"


def scored_methods(dataset, task, methods=None):
    """Methods (default: `all`'s) whose test reconstructions exist or can be made, in config order."""
    return [m for m in (METHODS if methods is None else methods) if producible(_recon(dataset, task, m))]


def scoring_inputs(wildcards):
    """What scoring reads: the measurements, the operator and (except for y) the reconstructions."""
    inputs = {
        "measurements": _measured("test", wildcards.dataset, wildcards.task),
        "operator": _measured("operator", wildcards.dataset, wildcards.task),
    }
    if wildcards.method != REFERENCE:
        inputs["recon"] = _recon(wildcards.dataset, wildcards.task, wildcards.method)
    return inputs


def metric_shards(wildcards):
    """Shards of one metrics job (cluster.shard_size.metrics; 1 for jobs the planner does not model)."""
    try:
        return planner.metric_shards(PLAN_CONFIG, base_dataset(wildcards.dataset), wildcards.task, wildcards.method)
    except planner.PlanError:
        return 1


METRIC_SHARD = "results/{dataset}/{task}/{method}/metrics/shards/{shard}-of-{shards}.npz"


def metrics_inputs(wildcards):
    """The metrics job scores the images itself (one shard), or gathers the shard files."""
    n = metric_shards(wildcards)
    if n == 1:
        return scoring_inputs(wildcards)
    return {"shards": shard_paths(METRIC_SHARD, n, **dict(wildcards.items()))}


def metrics_settings(wildcards):
    """The settings of a metrics job and of its shards (a gather checks they are the same)."""
    return {
        "dataset": wildcards.dataset,
        "task": wildcards.task,
        "method": wildcards.method,
        "seed": config["seed"],
        **{k: config["metrics"][k] for k in ("lpips_net", "lpips_upsample_below", "fid", "bootstrap_resamples", "ci_level", "batch_size")},
    }


def scoring_args(wildcards, input):
    """--task-dir/--recon of a job that scores images, or --shards of a gather."""
    if "shards" in input.keys():
        return shards_arg(input.shards)
    args = f"--task-dir {shlex.quote(str(Path(input.operator).parent))}"
    return args + (f" --recon {shlex.quote(input.recon)}" if "recon" in input.keys() else "")


def table_aggregates(wildcards, tasks=None, methods=None):
    return [
        _metrics(wildcards.dataset, task, m)
        for task in (TASKS if tasks is None else tasks)
        for m in scored_methods(wildcards.dataset, task, methods) + [REFERENCE]
    ]


# ---------------------------------------------------------------------------------------------
# Figures. Each figure lists the inputs that exist or can be made; a figure none of whose
# method inputs can be made (e.g. no DPS/DDRM/Dirac configured) is left out of the targets.

PER_TASK_FIGURES = {
    "perception": "fig3_perception_distortion",
    "consistency": "fig4_data_consistency",
    "lpips-nfe": "fig4_lpips_vs_nfe",
    "samples": "samples",
    "uncertainty": "uncertainty",
}


def figure_inputs(kind, dataset, task=None, tasks=None, methods=None):
    """{input name: path} of what a figure draws; empty when it has nothing to draw. `tasks` and
    `methods` default to those of `all` (the `extended` target passes every configured one)."""
    tasks = TASKS if tasks is None else tasks
    methods = METHODS if methods is None else methods
    dirac = any(m.startswith("dirac") for m in methods)
    out = {}
    if kind == "perception":
        if dirac and producible(_dirac_tuning(dataset, task, "trajectory.csv")):
            out[_key("trajectory", "dirac")] = _dirac_tuning(dataset, task, "trajectory.csv")
            if producible(_dirac_tuning(dataset, task, "chosen.yaml")):
                out[_key("chosen", "dirac")] = _dirac_tuning(dataset, task, "chosen.yaml")
    elif kind == "consistency":
        if dirac and producible(_dirac_tuning(dataset, task, "trajectory.csv")):
            out[_key("trajectory", "dirac")] = _dirac_tuning(dataset, task, "trajectory.csv")
        for m in figure_methods("consistency", methods):
            if producible(_recon(dataset, task, m, "trajectory.csv")):
                out[_key("trajectory", m)] = _recon(dataset, task, m, "trajectory.csv")
        if out:
            out["operator"] = _measured("operator", dataset, task)
    elif kind == "lpips-nfe":
        for m in figure_methods("lpips-nfe", methods):
            if producible(_recon(dataset, task, m)):
                out[_key("aggregate", m)] = _metrics(dataset, task, m)
                if producible(_recon(dataset, task, m, "trajectory.csv")):
                    out[_key("trajectory", m)] = _recon(dataset, task, m, "trajectory.csv")
    elif kind == "samples":
        out["measurements"] = _measured("test", dataset, task)
        for m in scored_methods(dataset, task, methods):
            out[_key("recon", m)] = _recon(dataset, task, m)
            out[_key("per_image", m)] = _metrics(dataset, task, m, "per_image.csv")
    elif kind == "uncertainty":
        if "dirac-po" in methods and producible(_recon(dataset, task, "dirac-po", "posterior_samples.npz")):
            out["measurements"] = _measured("test", dataset, task)
            out["samples"] = _recon(dataset, task, "dirac-po", "posterior_samples.npz")
    elif kind == "schedules":
        for t in tasks:
            sched = f"{_task_dir(dataset, t)}/schedule/schedule.csv"
            if producible(sched):
                out[_key("schedule", t)] = sched
                out[_key("operator", t)] = _measured("operator", dataset, t)
    return out


def available_figures(folder="results/figures", tasks=None, methods=None):
    """PNG paths of every figure that has something to draw (PDFs are made alongside)."""
    pngs = []
    for ds in DATASETS:
        for task in TASKS if tasks is None else tasks:
            for kind, name in PER_TASK_FIGURES.items():
                if figure_inputs(kind, ds, task, tasks, methods):
                    pngs.append(f"{folder}/{ds}_{task}_{name}.png")
        if figure_inputs("schedules", ds, None, tasks, methods):
            pngs.append(f"{folder}/{ds}_fig7_schedules.png")
    return pngs


def figure_args(wildcards, input):
    return " ".join(f"--input {k}={shlex.quote(str(v))}" for k, v in input.items() if k != "code")


FIGURE_OF = {name: kind for kind, name in PER_TASK_FIGURES.items()}


def figure_settings(wildcards, methods=None):
    return {
        "dataset": wildcards.dataset,
        "task": wildcards.get("task"),
        "seed": config["seed"],
        "grid_images": config["metrics"]["grid_images"],
        "uncertainty_images": config["metrics"]["uncertainty_images"],
        "method_labels": method_labels(METHODS if methods is None else methods),
    }


def schedule_sources(tasks=None):
    """Each task's schedule config (what made it: greedy + metric, a file, linear) for Fig. 7's labels."""
    out = {}
    for task in TASKS if tasks is None else tasks:
        sched = dict(config["tasks"][task]["schedule"])
        if "file" in sched:
            sched["file"] = os.path.basename(str(sched["file"]))  # a name, not a path: a moved file reruns nothing
        out[task] = sched
    return out


def evaluation_targets(wildcards):
    """Evaluated once every rule file is loaded, so it sees the method rules wherever they are included."""
    return (
        expand("results/tables/{dataset}.md", dataset=DATASETS)
        + available_figures()
        + ["results/tables/provenance.json", "results/figures/provenance.json"]
    )
