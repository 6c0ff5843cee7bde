# Planned resources and shards (diracbench.plan), shared by every rule file.
#
# At every DAG build the planner checks that each job fits the `cluster:` section's walltime
# (sharded where it can be) and stops with one line naming the setting to change if not. Network
# FLOP/memory counts are cached (~/.cache/diracbench, or $DIRACBENCH_PLAN_CACHE; '' disables), so
# only the first DAG build of a new network imports torch.
from diracbench import plan as planner

# The planner reads method sections by name; give it every configured method's section with its
# registry defaults filled in (a config may leave a section out).
PLAN_CONFIG = {**config, **METHOD_CONFIG}
CLUSTER = planner.cluster_settings(PLAN_CONFIG)

try:
    planner.check(PLAN_CONFIG)
except UserError as err:
    raise WorkflowError(str(err)) from None


def _planned_job(rule_name, wildcards):
    """The planner's job for a rule and its wildcards; None for jobs it does not model (a method
    added by a user's module, say), which then keep their registry or rule defaults."""
    if "dataset" in wildcards.keys():  # a seeds replicate is planned as its dataset
        wildcards = {**dict(wildcards.items()), "dataset": base_dataset(wildcards.dataset)}
    try:
        return planner.resources(PLAN_CONFIG, rule_name, wildcards)
    except planner.PlanError:
        return None


# The least walltime a planned job asks for: start-up, imports and JIT compilation, which the cost
# model leaves out, take minutes on a busy node (the default's planned jobs are seconds long).
RUNTIME_FLOOR_MIN = 10


def planned(rule_name, key, own):
    """A resource function: the planner's `runtime` (minutes, per shard; at least
    RUNTIME_FLOOR_MIN), `mem_mb` (host) or `gpu` (devices) of a job.

    `own` (a number, or a function of the wildcards) is the rule's own figure: it stands alone for
    jobs the planner does not model (a method added by a user's module, say), and it is the floor
    of mem_mb, because asking for too much host memory costs little and too little kills the job.
    `rule_name` is the planner's name (sample_dps, train_dirac, ...) or a function of the
    wildcards giving it. `gpu` is the planner's device count (training: one per process); on a
    `cluster.device: cpu` machine every job asks for none, modelled by the planner or not.
    """

    def resource(wildcards):
        name = rule_name(wildcards) if callable(rule_name) else rule_name
        job = _planned_job(name, wildcards)
        fallback = int(own(wildcards) if callable(own) else own)
        if key == "gpu":
            if CLUSTER["device"] != "gpu":
                return 0
            return fallback if job is None else int(job["gpu"])
        if job is None:
            return fallback
        return max(int(job["mem_mb"]), fallback) if key == "mem_mb" else max(int(job[key]), RUNTIME_FLOOR_MIN)

    return resource


def planned_training_runtime(rule_name, own=240):
    """A training job's runtime: the planner's, but never below the rule's own figure. The trainer
    takes it as its time budget (it saves its state and exits 75 before the walltime, for a
    cluster retry to resume), so on a machine slower than planned a short budget would stop a
    local run that has no retry."""
    plan = planned(rule_name, "runtime", own)
    return lambda wildcards: max(plan(wildcards), own)


def sample_shards(method, wildcards):
    """How many `{shard}` jobs sample a method's test split (cluster.shard_size; 1 when unsharded)."""
    if method not in planner.SHARDABLE:
        return 1
    return planner.shards(PLAN_CONFIG, method, wildcards.task, base_dataset(wildcards.dataset))


SHARD_FILE = "results/{dataset}/{task}/{method}/recon/shards/test-{shard}-of-{shards}.npz"


def shard_paths(pattern, n, **fields):
    """Every shard file of a job split in n: `pattern` with {shard} = 0..n-1 and {shards} = n."""
    return [pattern.format(**fields, shard=k, shards=n) for k in range(n)]


def shards_arg(files):
    """`--shards F1 F2 ...` (quoted) for a gathering command; empty without shard files."""
    return "--shards " + " ".join(shlex.quote(str(f)) for f in files) if len(files) else ""


def shard_files(method_of):
    """The gather step's inputs: every shard file of one method's test split."""

    def files(wildcards):
        method = method_of(wildcards)
        return shard_paths(SHARD_FILE, sample_shards(method, wildcards), dataset=wildcards.dataset, task=wildcards.task, method=method)

    return files
