# Shared helpers: config validation, wildcard constraints, settings and code-dependency lists.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

SRC = Path(workflow.basedir) / "src"
# The Snakefile imports config checks from the package; jobs import the package next to this
# Snakefile too (not some other installed copy), so `code=` inputs are the code that runs.
sys.path.insert(0, str(SRC))


# (Doubled braces: Snakemake formats the prefix like every shell command.)
# The checkout's path is quoted like every other path that reaches the shell.
# `offline: true` (the SLURM profile sets it) keeps every job off the network: see metrics/backbones.py.
_SRC_QUOTED = shlex.quote(str(SRC)).replace("{", "{{").replace("}", "}}")
_OFFLINE = "export DIRACBENCH_OFFLINE=1; " if config.get("offline", False) else ""
shell.prefix(f"export PYTHONPATH={_SRC_QUOTED}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; {_OFFLINE}")

from diracbench.codegraph import import_closure
from diracbench.configcheck import check_config, check_methods, validation_message
from diracbench.errors import UserError
from diracbench.methods.registry import registry as method_registry
from diracbench.plan.jobs import job_threads
from diracbench.tasks import ordered_tasks

# The method registry (diracbench/methods/*.py, METHOD_SPECS): read from the sources, no imports.
try:
    METHOD_SPECS = method_registry()
except UserError as err:
    raise WorkflowError(str(err)) from None
METHOD_SECTIONS = {spec.section for spec in METHOD_SPECS.values()}


def _validate(data, schema, prefix=""):
    try:
        validate(data, schema=schema)
    except Exception as err:  # snakemake wraps the jsonschema error; show it as one line
        cause = err.__context__ if hasattr(err.__context__, "absolute_path") else None
        if cause is None:
            raise
        raise WorkflowError(validation_message(cause, prefix)) from None


# Method sections are validated one by one against their method's schema, with the defaults of
# its registry entry under every key the config leaves out (a section may be absent altogether).
_validate({k: v for k, v in config.items() if k not in METHOD_SECTIONS}, "../schemas/config.schema.yaml")
ALL_METHODS = list(config["methods"])
try:
    check_methods(ALL_METHODS, METHOD_SPECS, config)
except UserError as err:
    raise WorkflowError(str(err)) from None
METHOD_CONFIG = {}  # section -> its validated settings, defaults filled in (config itself is left as given)
for _m in ALL_METHODS + [m for m, s in METHOD_SPECS.items() if s.section in config]:
    _spec = METHOD_SPECS[_m]
    if _spec.section not in METHOD_CONFIG:
        METHOD_CONFIG[_spec.section] = _spec.settings(config)  # check_methods has vetted it
        _validate(METHOD_CONFIG[_spec.section], f"../schemas/{_spec.schema}", prefix=_spec.section)
try:
    check_config(config)
except UserError as err:
    raise WorkflowError(str(err)) from None

DATASETS = sorted(config["datasets"])
# `extended:` names configured tasks and methods that only the `extended` target builds (it adds
# their columns and rows to copies of the tables and figures under results/extended/); `all` and
# everything it makes stay those of the other tasks and methods.
_EXTENDED = config.get("extended") or {}
ALL_TASKS = ordered_tasks(config["tasks"])  # the task registry's order: column groups of Table 1
TASKS = [t for t in ALL_TASKS if t not in _EXTENDED.get("tasks", [])]
METHODS = [m for m in ALL_METHODS if m not in _EXTENDED.get("methods", [])]
# The config as `all` sees it: for code that reads tasks and methods from a whole config
# (Tables 2-3), so that the extended ones neither appear there nor get built for them.
CORE_CONFIG = {**config, "tasks": {t: config["tasks"][t] for t in TASKS}, "methods": METHODS}


def method_config(method):
    """A configured method's settings: its config section over its registry defaults."""
    return METHOD_CONFIG[METHOD_SPECS[method].section]


def method_modules(methods):
    """The modules that implement some methods (code() entries: they are loaded by name)."""
    return sorted({METHOD_SPECS[m].module for m in methods})


# CPU threads of every job but data preparation, training (training.execution.threads) and the
# bench's timings: config `job_threads`. At 1, Snakemake runs two of them side by side on the
# default's 2 cores, which does ~1.4x the work of one 2-thread job (README: Time of the default).
JOB_THREADS = job_threads(config)
# Rule priority of the critical path: measurements, schedules, training and the Dirac tuning and
# sampling after it (see rules schedule and tune_dirac).
TRAINING_PRIORITY = 10


def lpips_settings():
    return {"net": config["metrics"]["lpips_net"], "upsample_below": config["metrics"]["lpips_upsample_below"]}


# Every rule file appends the files it contributes to the default target.
FINAL_TARGETS = []


# The `seeds` target's replicates: `<dataset>-seed<N>` is <dataset> with training seed N for the
# Dirac models and the DDPM prior; data, measurements and sampling seeds stay the main run's. The
# same rules build them under results/<dataset>-seed<N>/ (workflow/rules/seeds.smk).
_SEEDS = config.get("seeds") or {}
SEED_REPLICATES = {f"{ds}-seed{s}": (ds, s) for ds in DATASETS for s in _SEEDS.get("training", [])}


def base_dataset(name):
    """The configured dataset a (replicate) dataset name stands for."""
    return SEED_REPLICATES.get(name, (name, None))[0]


def dataset_config(name):
    return config["datasets"][base_dataset(name)]


def training_seed(name):
    """The seed of the models trained for a (replicate) dataset; everything else uses `seed`."""
    replicate = SEED_REPLICATES.get(name)
    return config["seed"] if replicate is None else replicate[1]


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS + sorted(SEED_REPLICATES))),
    task="|".join(ALL_TASKS),
    split="val|test",


def settings(build):
    """A params function: the JSON of exactly the config subset a rule uses.

    Passing only that subset keeps the params rerun trigger precise: editing one method's
    section reruns that method, nothing else.
    """

    def params(wildcards):
        return json.dumps(build(wildcards), sort_keys=True)

    return params


# Top-level keys that say how and where jobs run, never what they compute. A rule whose params
# are "the whole config" leaves them out, or running under the SLURM profile (offline=True) or on
# another device would mark its output stale.
EXECUTION_KEYS = ("device", "offline", "cluster", "bench")


def science_config():
    """The config without execution settings (EXECUTION_KEYS, training.execution)."""
    out = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
    if isinstance(out.get("training"), dict):
        out["training"] = {k: v for k, v in out["training"].items() if k != "execution"}
    return out


# Plumbing that cannot change a number (command lines, error types, progress bars, provenance
# records): left out of `code=` inputs, so editing it reruns nothing.
PLUMBING = ("diracbench.cli", "diracbench.errors", "diracbench.progress", "diracbench.provenance")


def code(*entries):
    """Source files a rule's jobs run, as inputs: the import graph of its entry modules.

    `entries` are module names (`diracbench.tune`, or `tune` for short); the files are every
    package module they import, transitively (diracbench.codegraph). Modules a job loads by name
    at run time (a method's module, a training loss) must be listed as entries too.
    """
    names = tuple(e if e.startswith("diracbench") else f"diracbench.{e}" for e in entries)
    try:
        files = import_closure(names, exclude=PLUMBING)
    except ValueError as err:
        raise WorkflowError(f"code dependency: {err}") from None
    # Relative to the working directory: Snakemake records the set of input paths, so absolute
    # ones would rerun every job after the checkout moves (another mount on a cluster).
    return sorted(os.path.relpath(p) for p in files)


def gpu_device(wildcards, threads):
    """--device of the GPU rules: config `device` (auto, cuda or cpu).

    An execution setting, not science. Snakemake leaves params functions that take `threads`
    out of its params rerun trigger, so switching auto/cuda/cpu reruns no finished job.
    """
    return config["device"]


def folder_of(key, kind="output"):
    """A params function giving the folder of a named input/output (keeps paths out of params)."""
    if kind == "output":
        return lambda wildcards, output: str(Path(output[key]).parent)
    return lambda wildcards, input: str(Path(input[key]).parent)


def log(rule_name, pattern):
    return f"results/logs/{rule_name}/{pattern}.log"


def bench(rule_name, pattern):
    return f"results/benchmarks/{rule_name}/{pattern}.tsv"


include: "plan_common.smk"
