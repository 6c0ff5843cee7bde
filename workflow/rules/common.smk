# Shared helpers: config validation, wildcard constraints, settings and code-dependency lists.
import json
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

SRC = Path(workflow.basedir) / "src"
# Jobs import the package next to this Snakefile, so `code=` inputs are the code that runs.
sys.path.insert(0, str(SRC))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)

from diracbench.configcheck import check_config
from diracbench.errors import UserError

validate(config, schema="../schemas/config.schema.yaml")
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
    for part in ("__init__.py", "cli.py", "errors.py", "io.py", "provenance.py", "progress.py") + parts:
        path = SRC / "diracbench" / part
        if path.is_dir():
            files.update(str(p) for p in path.rglob("*.py"))
        elif path.is_file():
            files.add(str(path))
        else:
            raise WorkflowError(f"code dependency {path} does not exist")
    return sorted(files)


def log(rule_name, pattern):
    return f"results/logs/{rule_name}/{pattern}.log"


def bench(rule_name, pattern):
    return f"results/benchmarks/{rule_name}/{pattern}.tsv"
