"""Checks across config keys that a JSON schema cannot express.

Called by the Snakefile right after schema validation, before any job runs; each problem is
reported as one line naming the key and the fix. Pure Python, so `snakemake -n` stays fast.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterator

from diracbench.errors import UserError
from diracbench.tasks import registry as task_registry
from diracbench.tasks import task_spec


def check_config(config: dict) -> None:
    problems = list(_problems(config))
    if problems:
        raise UserError("invalid configuration:\n  - " + "\n  - ".join(problems))


def check_methods(methods: list[str], specs: dict, config: dict) -> None:
    """Configured methods are registered; their sections (with defaults) exist; their tuning grids
    cover every task and search only what the method tunes. `specs`: methods.registry.registry()."""
    problems = []
    unknown = [m for m in methods if m not in specs]
    if unknown:
        problems.append(f"methods: {unknown} are not registered methods; registered: {list(specs)} "
                        "(a module in src/diracbench/methods/ registers a name with METHOD_SPECS)")
    for name in methods:
        if name not in specs:
            continue
        spec = specs[name]
        try:
            section = spec.settings(config)
        except UserError as err:
            problems.append(str(err))
            continue
        if spec.tuning != "grid":
            continue
        grid = section.get("grid") or {}
        # An unregistered task is check_config's error (one line naming the registered tasks).
        for task in [t for t in config["tasks"] if t in task_registry()]:
            if task not in grid:
                problems.append(f"{spec.section}.grid lacks the task {task!r}; give its values to search on val (or {{}} for none)")
            elif spec.tunes is not None:
                extra = sorted(set(grid[task]) - set(spec.tunes))
                if extra:
                    problems.append(f"{spec.section}.grid.{task} searches {extra}, which {name} does not tune; it tunes {list(spec.tunes)}")
    if problems:
        raise UserError("invalid configuration:\n  - " + "\n  - ".join(problems))


def validation_message(error, prefix: str = "") -> str:
    """One line for a jsonschema ValidationError: the config key, what is wrong, what it is for."""
    while error.context:  # oneOf/anyOf: explain the branch the user meant
        branches: dict[int, list] = {}
        for e in error.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        # A branch whose discriminator (`kind: const`) matched is the one the user meant.
        meant = [errs for errs in branches.values() if not any(e.validator == "const" for e in errs)]
        if len(meant) == 1:
            candidates = meant[0]
        else:
            consts = [e for e in error.context if e.validator == "const"]
            if consts and len(meant) == 0:
                key = ".".join(str(p) for p in consts[0].absolute_path)
                return f"config key {key}: {consts[0].instance!r} is not one of {sorted(str(e.validator_value) for e in consts)}"
            candidates = list(error.context)
        depth = max(len(e.absolute_path) for e in candidates)
        error = next(e for e in candidates if len(e.absolute_path) == depth)
    key = ".".join(str(p) for p in ([prefix] if prefix else []) + list(error.absolute_path)) or "(top level)"
    hint = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "additionalProperties" and not error.absolute_path and not prefix:
        # Snakemake's --configfile takes several files: a target written after it is read as config.
        hint = ("unknown top-level keys: if a target follows --configfile on the command line, Snakemake read it as "
                "a config file; put targets before --configfile")
    line = f"config key {key}: {error.message}"
    return f"{line} ({hint})" if hint else line


def _problems(config: dict):
    noise = config["noise"]
    if noise["sigma_min"] > noise["sigma_max"]:
        yield f"noise.sigma_min ({noise['sigma_min']}) must not exceed noise.sigma_max ({noise['sigma_max']})"
    sizes = {name: ds["image_size"] for name, ds in config["datasets"].items()}
    for task, spec in config["tasks"].items():
        op = spec["operator"]
        try:
            registered = task_spec(task).operator
        except UserError as err:
            yield f"tasks.{task}: {err}"
            continue
        if op["kind"] != registered:
            yield f"tasks.{task}.operator.kind is {op['kind']!r}, but the task {task!r} is registered with the operator kind {registered!r}; use kind: {registered}"
            continue
        check = OPERATOR_CHECKS.get(op["kind"])
        if check is not None:
            yield from check(op, f"tasks.{task}.operator", sizes)
    yield from _dirac_steps(config)
    yield from _batch_sizes(config)
    yield from _extended(config)
    yield from _seeds(config)
    for name, ds in config["datasets"].items():
        src = ds["source"]
        if src["kind"] == "photos":
            seen: dict[str, str] = {}
            for split in ("train", "val", "test"):
                for photo in src["splits"][split]:
                    if photo in seen:
                        yield f"datasets.{name}.source.splits: photo {photo!r} is in both {seen[photo]!r} and {split!r}; a photo may be in one split only"
                    seen[photo] = split


def _extended(config: dict) -> Iterator[str]:
    """`extended:` may only name configured tasks and methods (it moves them out of `all`)."""
    ext = config.get("extended") or {}
    for key, configured in (("tasks", list(config["tasks"])), ("methods", list(config["methods"]))):
        for name in ext.get(key, []):
            if name not in configured:
                yield f"extended.{key} names {name!r}, which is not configured; add it to '{key}' (configured: {configured}) or remove it from extended.{key}"
    if ext and all(t in ext.get("tasks", []) for t in config["tasks"]):
        yield "extended.tasks names every configured task; `all` needs at least one task of its own"


def _seeds(config: dict) -> Iterator[str]:
    """`seeds:` adds replicate datasets `<dataset>-seed<N>`: their names must be free and their
    seeds differ from the main run's."""
    seeds = config.get("seeds") or {}
    training = seeds.get("training", [])
    if config["seed"] in training:
        yield f"seeds.training repeats the main run's seed {config['seed']}; list only the extra training seeds"
    if training:
        for name in config["datasets"]:
            if re.search(r"-seed[0-9]+$", name):
                yield f"datasets.{name}: a name ending in -seed<N> is reserved for the seeds target's replicates; rename the dataset"
    for name in seeds.get("methods", []):
        if name not in config["methods"] or name in (config.get("extended") or {}).get("methods", []):
            yield f"seeds.methods names {name!r}, which is not a method of `all`; use some of {[m for m in config['methods'] if m not in (config.get('extended') or {}).get('methods', [])]}"


def _blur_problems(op: dict, key: str, sizes: dict[str, int]) -> Iterator[str]:
    if op["kernel_size"] % 2 != 1:
        yield f"{key}.kernel_size must be odd (got {op['kernel_size']})"
    for name, size in sizes.items():
        if op["kernel_size"] // 2 >= size:
            yield f"{key}.kernel_size {op['kernel_size']} needs reflection padding of {op['kernel_size'] // 2} px, which datasets.{name}.image_size {size} cannot provide; use kernel_size < {2 * size}"
    if op.get("std_min", 0.3) >= op["std_max"]:
        yield f"{key}.std_min must be below std_max"
    # operators.blur truncates each kernel at radius floor(6 std + 0.5): a narrower window
    # would cut the strongest blur silently, so the measurement would not be the one named.
    radius = math.floor(6.0 * op["std_max"] + 0.5)
    if op["kernel_size"] // 2 < radius:
        yield f"{key}.kernel_size {op['kernel_size']} is narrower than the 6-std support of std_max {op['std_max']} (radius {radius} px); use kernel_size >= {2 * radius + 1} or lower std_max"


def _mask_problems(op: dict, key: str, sizes: dict[str, int]) -> Iterator[str]:
    if op.get("mask_std_min", 0.1) >= op["mask_std_max"]:
        yield f"{key}.mask_std_min must be below mask_std_max"


def _downsample_problems(op: dict, key: str, sizes: dict[str, int]) -> Iterator[str]:
    factor = op["factor"]
    for name, size in sizes.items():
        if size % factor:
            yield f"{key}.factor {factor} does not divide datasets.{name}.image_size {size}; use a factor that divides every dataset's image_size"
    if op.get("strength_min", 0.0) >= op.get("strength_max", 1.0):
        yield f"{key}.strength_min must be below strength_max"


# Per operator kind (diracbench.operators.registry), what the task schema cannot check.
# Torch-free on purpose: this runs when Snakemake builds the DAG.
OPERATOR_CHECKS: dict[str, Callable[[dict, str, dict[str, int]], Iterator[str]]] = {
    "blur": _blur_problems,
    "inpaint": _mask_problems,
    "downsample": _downsample_problems,
}


def _dirac_steps(config: dict):
    """Every Dirac sampler step must divide [0, 1] into whole steps (else tune_dirac fails after training)."""
    for task, spec in config.get("dirac", {}).get("tasks", {}).items():
        for variant in ("po", "do"):
            searched = (spec.get("search") or {}).get(variant, {}).get("dt", [])  # the tuning search space
            for key, dt in [(f"{variant}.dt", spec.get(variant, {}).get("dt"))] + [(f"search.{variant}.dt", v) for v in searched]:
                if isinstance(dt, (int, float)) and dt > 0:
                    n = round(1.0 / dt)
                    if abs(n * dt - 1.0) > 1e-6:
                        yield f"dirac.tasks.{task}.{key} {dt} does not divide 1 into whole steps; use e.g. {1.0 / max(n, 1):g} (1/dt must be a whole number)"


def training_split_bound(name: str, ds: dict) -> int | None:
    """An upper bound on the number of training images of a dataset, known without decoding it.

    Photos: the tile positions of the training photos (flat tiles are dropped later, never added),
    capped by `limits.train`. Folder datasets: None here; the Snakefile counts their listing.
    """
    src = ds["source"]
    if src["kind"] != "photos":
        return None
    import importlib.util
    from pathlib import Path

    from PIL import Image

    from diracbench.data.photos import PHOTOS

    size, stride, scale = int(ds["image_size"]), int(src["train_stride"]), float(src["scale"])
    positions = 0
    for photo in src["splits"]["train"]:
        if photo not in PHOTOS:
            raise UserError(f"unknown photo {photo!r}")
        package, files = PHOTOS[photo]
        # Located, not imported (importing sklearn takes seconds): the DAG must stay fast.
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise UserError(f"package {package} is not installed")
        folder = Path(spec.origin).parent / ("data" if package == "skimage" else "datasets/images")
        for path in (folder / f for f in files):
            if not path.is_file():
                raise UserError(f"photo file {path} is missing")
            with Image.open(path) as img:  # reads the header only
                w, h = img.size
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            if w >= size and h >= size:
                positions += ((h - size) // stride + 1) * ((w - size) // stride + 1)
    limit = src.get("limits", {}).get("train")
    return positions if limit is None else min(positions, int(limit))


def batch_size_problems(config: dict, split_sizes: dict[str, int]) -> list[str]:
    """`training.batch_size` (and each Dirac task's override) against every dataset's training split."""
    sizes = [("training.batch_size", config["training"]["batch_size"])]
    for task, spec in config.get("dirac", {}).get("tasks", {}).items():
        override = spec.get("training", {}).get("batch_size")
        if override is not None:
            sizes.append((f"dirac.tasks.{task}.training.batch_size", override))
    out = []
    for name, n in split_sizes.items():
        for key, batch in sizes:
            if batch > n:
                out.append(f"{key} {batch} is larger than the training split of datasets.{name} ({n} images at most); lower it or add training images")
    return out


def _batch_sizes(config: dict):
    bounds = {}
    for name, ds in config["datasets"].items():
        try:
            bound = training_split_bound(name, ds)
        except UserError:
            continue  # a missing photo is reported by its own check
        if bound is not None:
            bounds[name] = bound
    yield from batch_size_problems(config, bounds)
