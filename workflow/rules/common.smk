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
shell.prefix(
    "export PYTHONPATH=" + shlex.quote(str(SRC)).replace("{", "{{").replace("}", "}}") + "${{PYTHONPATH:+:$PYTHONPATH}}; "
    + ("export DIRACBENCH_OFFLINE=1; " if config.get("offline", False) else "")
)

from diracbench.configcheck import check_config, validation_message
from diracbench.errors import UserError

try:
    validate(config, schema="../schemas/config.schema.yaml")
except Exception as err:  # snakemake wraps the jsonschema error; show it as one line
    cause = err.__context__ if hasattr(err.__context__, "absolute_path") else None
    if cause is None:
        raise
    raise WorkflowError(validation_message(cause)) from None
try:
    check_config(config)
except UserError as err:
    raise WorkflowError(str(err)) from None

DATASETS = sorted(config["datasets"])
TASKS = sorted(config["tasks"])
METHODS = list(config["methods"])

# Every rule file appends the files it contributes to the default target.
FINAL_TARGETS = []


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    task="|".join(TASKS),
    split="val|test",


def settings(build):
    """A params function: the JSON of exactly the config subset a rule uses.

    Passing only that subset keeps the params rerun trigger precise: editing one method's
    section reruns that method, nothing else.
    """

    def params(wildcards):
        return json.dumps(build(wildcards), sort_keys=True)

    return params


def code(*parts):
    """Source files a rule depends on (package-relative files or sub-packages), as inputs."""
    files = set()
    # Always: the files that shape every result file. Plumbing that cannot change a number
    # (cli, errors, progress bars, provenance records) is left out, so editing it reruns nothing.
    for part in ("__init__.py", "io.py") + parts:
        path = SRC / "diracbench" / part
        # Relative to the working directory: Snakemake records the set of input paths, so absolute
        # ones would rerun every job after the checkout moves (another mount on a cluster).
        if path.is_dir():
            files.update(os.path.relpath(p) for p in path.rglob("*.py"))
        elif path.is_file():
            files.add(os.path.relpath(path))
        else:
            raise WorkflowError(f"code dependency {path} does not exist")
    return sorted(files)


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
