# Helpers of the training rules (train_dirac, train_prior): execution settings and resources.
#
# `training.execution` (workflow/schemas/training.schema.yaml) says HOW a model is trained:
# processes, micro-batch, activation checkpointing, data workers. It reaches the rules as
# resources, not params, so changing it never reruns a finished model, and the science settings
# a rule passes (its params) stay exactly what they were before execution settings existed.

import functools

from diracbench.plan.jobs import train_threads  # the planner counts the same threads

EXECUTION_DEFAULTS = {"processes": 1, "micro_batch": 0, "activation_checkpointing": False, "data_workers": 0, "threads": 0}


def science_training(training):
    """The training section without its execution block (what a trained model depends on)."""
    return {k: v for k, v in training.items() if k != "execution"}


def execution_of(training, where):
    e = {**EXECUTION_DEFAULTS, **training.get("execution", {})}
    if training["batch_size"] % e["processes"]:
        raise WorkflowError(f"config key {where}.execution.processes {e['processes']} does not divide {where}.batch_size {training['batch_size']}; every process must get the same number of images")
    return e


def dirac_training(wildcards):
    return {**config["training"], **dirac_task(wildcards.task).get("training", {})}


def dirac_execution(wildcards):
    return execution_of(dirac_training(wildcards), f"dirac.tasks.{wildcards.task}.training")


def prior_execution(wildcards):
    return execution_of(config["training"], "training")


@functools.lru_cache(maxsize=None)
def _parameter_count(kind, network_json, image_size):
    import torch
    from diracbench.nn.models import build_model

    with torch.device("meta"):  # no memory, no initialisation: only the shapes
        model = build_model(kind, json.loads(network_json), image_size)
    return sum(p.numel() for p in model.parameters())


def train_mem_mb(kind, training, image_size, execution, data_mb):
    """Host memory of a training job: every process holds its model, gradients, Adam's two
    moments and the EMA (fp32; on CPU, or on the host while a resume state loads), rank 0 one
    more copy of the state while it writes it, 4 GB for the interpreter and batches, and up to
    4 GB of page cache for the memory-mapped training array (it is read, never held: a 250 GB
    ImageNet array must not need 250 GB). Never below the 8000 MB the rules always asked for.
    Paper presets (4 processes, full data term): base network (67.7M) ~15.5 GB; large (520.9M, EMA) ~67 GB."""
    params = _parameter_count(kind, json.dumps(training["network"], sort_keys=True), image_size)
    per_copy_mb = params * 4 / 2**20
    copies = 4 + (1 if training.get("ema_decay") else 0)  # weights, grads, 2 Adam moments, EMA
    state_mb = per_copy_mb * (copies - 1)  # what the resume state holds (no grads)
    need = execution["processes"] * per_copy_mb * copies + state_mb + min(data_mb, 4000) + 4000
    return max(8000, int(need * 1.2))


# Checked when the workflow loads, so `snakemake -n` stops with one line before any job runs.
execution_of(config["training"], "training")
for _task, _cfg in config["dirac"]["tasks"].items():
    execution_of({**config["training"], **_cfg.get("training", {})}, f"dirac.tasks.{_task}.training")
