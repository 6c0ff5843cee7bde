# Helpers of workflow/rules/bench.smk (kept apart so rule files hold rules only).
#
# The cost table reruns each method with exactly the settings of its sampling job, built by the
# same helpers (dirac_sample_settings for the Dirac rules, method_settings for every other method).
import shlex
from types import SimpleNamespace


def bench_config():
    """The config's bench section, read only when a bench job is in the DAG."""
    if "bench" not in config:
        raise WorkflowError("config key bench is missing; the bench target needs it (copy the bench section of config.yaml)")
    return config["bench"]


def all_targets(wildcards):
    """Every input of `rule all` (FINAL_TARGETS holds paths and input functions)."""
    out = []
    for item in FINAL_TARGETS:
        value = item(wildcards) if callable(item) else item
        out.extend([value] if isinstance(value, str) else value)
    return out


def _bench_input_id(*parts):
    # Named inputs must be identifiers; the CLI key keeps the readable dataset:task:method:name form.
    return "__".join(re.sub(r"[^0-9A-Za-z]", "_", p) for p in parts)


def _bench_input_arg(key, path):
    name = ":".join(key)
    return f"--input {shlex.quote(f'{name}={path}')}"


def bench_method_jobs():
    """One entry per (dataset, task, method): the job for --settings and its named input files."""
    jobs = []
    for ds in DATASETS:
        for task in TASKS:
            for method in METHODS:
                w = SimpleNamespace(dataset=ds, task=task)
                tdir = f"results/{ds}/{task}"
                files = {"operator": _measured("operator", ds, task), "measurements": _measured("test", ds, task),
                         "aggregate": f"{tdir}/{method}/metrics/aggregate.csv", "per_image": f"{tdir}/{method}/metrics/per_image.csv"}
                tuned_key = None
                if method in DIRAC_METHODS:
                    variant = method.split("-", 1)[1]
                    w = SimpleNamespace(dataset=ds, task=task, variant=variant)
                    job_settings = dirac_sample_settings(w)
                    files["tuned"] = f"{tdir}/dirac/tuning/chosen.yaml"
                    tuned_key = variant
                    files["schedule"] = f"{tdir}/schedule/schedule.csv"
                    dt = dirac_task(task)[variant]["model_dt"]
                    files[f"model-dt{dt_name(dt)}"] = model_path(w, dt)
                else:
                    job_settings = method_settings(method, "test", w)
                    files["tuned"] = f"{tdir}/{method}/tuning/chosen.yaml"
                    files.update(method_inputs(SimpleNamespace(dataset=ds, task=task, method=method)))
                job = {"dataset": ds, "task": task, "method": method, "settings": job_settings, "tuned_key": tuned_key}
                jobs.append({"job": job, "files": {(ds, task, method, name): path for name, path in files.items()}})
    return jobs


def bench_method_inputs(wildcards):
    return {_bench_input_id(*key): path for j in bench_method_jobs() for key, path in j["files"].items()}


def bench_method_args(wildcards, input):
    return " ".join(_bench_input_arg(key, input[_bench_input_id(*key)]) for j in bench_method_jobs() for key in j["files"])


def bench_dirac_variant():
    """Batching is measured on the Dirac-PO network (Dirac-DO's when only DO is configured)."""
    if "dirac-po" in METHODS:
        return "po"
    if "dirac-do" in METHODS:
        return "do"
    raise WorkflowError("the bench target times Dirac sampling: add dirac-po or dirac-do to the config's methods")


def bench_batching_files():
    variant = bench_dirac_variant()
    files = {}
    for ds in DATASETS:
        for task in TASKS:
            w = SimpleNamespace(dataset=ds, task=task)
            tdir = f"results/{ds}/{task}"
            files[(ds, task, "operator")] = _measured("operator", ds, task)
            files[(ds, task, "schedule")] = f"{tdir}/schedule/schedule.csv"
            files[(ds, task, "model")] = model_path(w, dirac_task(task)[variant]["model_dt"])
            files[(ds, task, "measurements")] = _measured("test", ds, task)
            files[(ds, task, "train")] = f"results/{ds}/data/train.npy"
    return files


def bench_batching_inputs(wildcards):
    return {_bench_input_id(*key): path for key, path in bench_batching_files().items()}


def bench_batching_args(wildcards, input):
    return " ".join(_bench_input_arg(key, input[_bench_input_id(*key)]) for key in bench_batching_files())


def bench_batching_settings(wildcards):
    cfg = bench_config()
    variant = bench_dirac_variant()
    return {
        "steps": cfg["sampling"]["steps"],
        "batch_sizes": cfg["sampling"]["batch_sizes"],
        "loop_images": cfg["sampling"]["loop_images"],
        "repeats": cfg["repeats"],
        "seed": config["seed"],
        "tasks": {
            f"{ds}:{task}": {
                "sampler": dirac_task(task)[variant],
                "loss": {"dt": float(dirac_task(task)[variant]["model_dt"]), **config["dirac"]["loss"]},
                # The batch the task's Dirac models train with (dirac.tasks.<task>.training may override it).
                "loss_batch_size": {**config["training"], **dirac_task(task).get("training", {})}["batch_size"],
            }
            for ds in DATASETS
            for task in TASKS
        },
    }


def bench_training_settings(wildcards):
    """The default's training step (first task's blur kernel, or 37 taps when no blur task)."""
    cfg = bench_config().get("training", {})
    blur = [config["tasks"][t]["operator"] for t in TASKS if config["tasks"][t]["operator"]["kind"] == "blur"]
    return {
        "network": config["training"]["network"],
        "image_size": dataset_config(DATASETS[0])["image_size"],
        "kernel_size": blur[0]["kernel_size"] if blur else 37,
        "batch_size": config["training"]["batch_size"],
        "steps": cfg.get("steps", 10),
        "warmup": cfg.get("warmup", 3),
        "threads": cfg.get("threads", [1, 2]),
        "compile": cfg.get("compile", False),
    }
