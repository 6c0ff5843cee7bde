"""The method registry: `name -> MethodSpec`, read without importing torch, JAX or any method.

Every module in `diracbench/methods/` that defines a module-level literal

    METHOD_SPECS = {"<name>": {...}, ...}

registers those methods. The dict is read with `ast.literal_eval` from the module's source, so
the Snakefile, `tables`, `figures` and `bench` learn about a method without importing it (a
method module imports torch or JAX at its top). Registering a method therefore takes its module
and one line in the config's `methods:` list; no central file lists methods.

Spec keys (all but `display` optional):

  display    name in tables, figures and the bench ("DPS")
  order      row order in tables and figures (smaller first; ties by name)
  env        "torch" or "scico": the conda environment (envs/<env>.yaml) and the rule pair
             (tune_method_<env>, sample_method_<env>) that runs the method
  rules      "generic" (the tune/sample rule pair above) or "dirac" (own rules: Dirac's variants
             share one tuning job and need trained models)
  inputs     named inputs besides the operator and measurements: "prior" (DDPM weights)
  tuning     "grid": grid search over the config's `<section>.grid.<task>`; "own": `tune()`
  tunes      hyper-parameters the grid may search (a grid naming another key is an error)
  section    the config section holding its settings (default: the name)
  schema     a JSON schema file in workflow/schemas/ for that section (default: method.schema.yaml)
  defaults   the section used where the config has none, and under any key the config omits
             (merged one level deep: a config may give some hparams, or one task's grid, only)
  figures    figure kinds that draw it besides the sample grid: "consistency", "lpips-nfe"
  resources  {"tune": {...}, "sample": {...}}: mem_mb and runtime (minutes) of its jobs
  gpu        whether its jobs request a GPU (gpu=1) on a cluster
  device     the --device its jobs pass ("auto" or "cpu")
  section_required  the config must give the section (no defaults; Dirac)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from diracbench.errors import UserError
from diracbench.literals import module_dict_literal

METHODS_DIR = Path(__file__).resolve().parent
ENVS = ("torch", "scico")
RULE_KINDS = ("generic", "dirac")
INPUT_KINDS = ("prior",)
FIGURE_KINDS = ("consistency", "lpips-nfe")
_SKIP = {"__init__", "base", "registry"}
_KEYS = {"display", "order", "env", "rules", "inputs", "tuning", "tunes", "section", "schema", "defaults", "figures", "resources", "gpu", "device", "section_required"}
DEFAULT_RESOURCES = {"tune": {"mem_mb": 4000, "runtime": 60}, "sample": {"mem_mb": 4000, "runtime": 60}}
# Where a method's config section is absent, these keys come from here under the spec's defaults.
BASE_DEFAULTS = {"hparams": {}, "grid": {}, "objective": "auto", "max_images": {"val": None, "test": None}}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    module: str
    display: str
    order: int = 1000
    env: str = "torch"
    rules: str = "generic"
    inputs: tuple[str, ...] = ()
    tuning: str = "grid"
    tunes: tuple[str, ...] | None = None  # None: any key
    section: str = ""
    schema: str = "method.schema.yaml"
    defaults: dict = field(default_factory=dict)
    figures: tuple[str, ...] = ()
    resources: dict = field(default_factory=dict)
    gpu: bool = False
    device: str = "auto"
    section_required: bool = False

    def settings(self, config: dict) -> dict:
        """The method's config section with its documented defaults under every missing key.

        A method with `section_required` (Dirac: per-task settings no default can guess) takes
        its section as given; the config must have it."""
        given = config.get(self.section)
        if self.section_required:
            if given is None:
                raise UserError(f"config key {self.section} is missing; method {self.name} needs it (see workflow/schemas/{self.schema})")
            return given
        merged = {**BASE_DEFAULTS, **self.defaults}
        for key, value in (given or {}).items():
            # One level deep: a config may give some hyper-parameters (or one task's grid) only.
            base = merged.get(key)
            merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
        return merged

    def job_resources(self, stage: str) -> dict:
        return {**DEFAULT_RESOURCES[stage], **self.resources.get(stage, {})}


def _spec(name: str, raw: Any, module: str, path: Path) -> MethodSpec:
    where = f"{path.name}: METHOD_SPECS[{name!r}]"
    if not isinstance(raw, dict) or "display" not in raw:
        raise UserError(f"{where} must be a dict with at least a 'display' name")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise UserError(f"{where} has unknown keys {unknown}; known: {sorted(_KEYS)}")
    checks = (("env", ENVS), ("rules", RULE_KINDS), ("tuning", ("grid", "own")))
    for key, allowed in checks:
        if key in raw and raw[key] not in allowed:
            raise UserError(f"{where}.{key} is {raw[key]!r}; use one of {list(allowed)}")
    for key, allowed in (("inputs", INPUT_KINDS), ("figures", FIGURE_KINDS)):
        bad = [v for v in raw.get(key, ()) if v not in allowed]
        if bad:
            raise UserError(f"{where}.{key} has {bad}; use some of {list(allowed)}")
    kw = dict(raw)
    for key in ("inputs", "figures", "tunes"):
        if kw.get(key) is not None:
            kw[key] = tuple(kw[key])
    kw.setdefault("section", name)
    kw.setdefault("device", "cpu" if kw.get("env") == "scico" else "auto")
    return MethodSpec(name=name, module=module, **kw)


@lru_cache(maxsize=None)
def _discover(directory: str) -> dict[str, MethodSpec]:
    specs: dict[str, MethodSpec] = {}
    for path in sorted(Path(directory).glob("*.py")):
        if path.stem in _SKIP:
            continue
        found = module_dict_literal(path, "METHOD_SPECS")
        for name, raw in (found or {}).items():
            if name in specs:
                raise UserError(f"method {name!r} is registered twice ({specs[name].module} and {path.name})")
            if name == "y":
                raise UserError(f"{path.name}: 'y' names the measurement's reference row; choose another method name")
            specs[name] = _spec(name, raw, f"diracbench.methods.{path.stem}", path)
    return dict(sorted(specs.items(), key=lambda kv: (kv[1].order, kv[0])))


def registry() -> dict[str, MethodSpec]:
    """Every registered method, in table order."""
    return _discover(str(METHODS_DIR))


def spec(name: str) -> MethodSpec:
    specs = registry()
    if name not in specs:
        raise UserError(f"unknown method {name!r}; registered methods: {sorted(specs)} (a method module in diracbench/methods/ registers a name with METHOD_SPECS)")
    return specs[name]


def display_name(name: str) -> str:
    """Display name of a method (the name itself when unregistered, e.g. the reference row)."""
    specs = registry()
    return specs[name].display if name in specs else name


def method_order() -> tuple[str, ...]:
    return tuple(registry())


def ordered(names) -> list[str]:
    """Names in registry order; unregistered names after them, in their given order."""
    rank = {m: i for i, m in enumerate(registry())}
    return sorted(names, key=lambda m: (rank.get(m, len(rank)), 0 if m in rank else list(names).index(m)))
