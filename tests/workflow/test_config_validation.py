"""The worst config mistakes each stop `snakemake` before any job runs, with one line naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from smk import REPO, snakemake

DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def _set(cfg: dict, path: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


_DELETE = object()


def without_key(node, key: str):
    """A deep copy of a config with every mapping entry named `key` removed."""
    if isinstance(node, dict):
        return {k: without_key(v, key) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [without_key(v, key) for v in node if v != key]
    return copy.deepcopy(node)

MISTAKES = [
    ("typo in a top-level key", lambda c: {**c, "datasetz": c["datasets"]}, "datasetz"),
    ("string where a number belongs", lambda c: _set(c, "datasets.photos.image_size", "32"), "datasets.photos.image_size"),
    ("measurement noise out of range", lambda c: _set(c, "noise.sigma_max", 5.0), "noise.sigma_max"),
    ("missing required section", lambda c: _set(c, "noise", _DELETE), "noise"),
    ("even blur kernel", lambda c: _set(c, "tasks.deblur.operator.kernel_size", 36), "tasks.deblur.operator.kernel_size"),
    ("kernel wider than the image", lambda c: _set(c, "tasks.deblur.operator.kernel_size", 71), "kernel_size"),
    ("photo in two splits", lambda c: _set(c, "datasets.photos.source.splits.val", ["coffee", "rocket"]), "rocket"),
    ("unknown photo", lambda c: _set(c, "datasets.photos.source.splits.test", ["astronaut", "lena"]), "datasets.photos.source.splits.test"),
    ("unknown method", lambda c: _set(c, "methods", ["dirac-po", "dsp"]), "methods"),
    ("unknown task", lambda c: _set(c, "tasks", {**c["tasks"], "denoise": c["tasks"]["deblur"]}), "tasks"),
    ("sigma_min above sigma_max", lambda c: _set(c, "noise.sigma_min", 0.2), "noise.sigma_min"),
    ("blur operator under the inpaint task", lambda c: _set(c, "tasks.inpaint.operator", c["tasks"]["deblur"]["operator"]), "tasks.inpaint"),
    ("folder dataset without root", lambda c: _set(c, "datasets.photos.source", {"kind": "folders", "train": {"protocol": "plain"}, "val": {"protocol": "plain", "root": "x"}, "test": {"protocol": "plain", "root": "x"}}), "root"),
    ("negative learning rate", lambda c: _set(c, "training.lr", -1e-4), "training.lr"),
    ("processes that do not divide the batch", lambda c: _set(c, "training.execution.processes", 5), "training.execution.processes"),
    ("objective spelled with a hyphen", lambda c: _set(c, "ddrm.objective", "fd-vgg"), "ddrm.objective"),
    ("grid searching what the method does not tune", lambda c: _set(c, "admm-tv.grid.deblur", {"lam": [0.1], "rho": [0.1], "gamma": [1.0]}), "admm-tv.grid.deblur"),
    ("wrong type in a method section", lambda c: _set(c, "dps.hparams.steps", "many"), "dps.hparams.steps"),
    ("Dirac configured without its section", lambda c: _set(c, "dirac", _DELETE), "dirac"),
    ("extended names a method that is not configured", lambda c: _set(c, "extended.methods", ["diffpir", "dpir"]), "extended.methods"),
    ("super-resolution factor that does not divide the image", lambda c: _set(c, "tasks.sr4.operator.factor", 5), "tasks.sr4.operator.factor"),
]


@pytest.mark.workflow
@pytest.mark.parametrize("name, mutate, key", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_bad_config_fails_early_naming_the_key(tmp_path, name, mutate, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(DEFAULT)))
    proc = snakemake("-n", config=bad, workdir=tmp_path, check=False, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    message = next((line for line in out.splitlines() if "config key" in line or line.strip().startswith("- ")), "")
    assert key in message, out[-2000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_a_target_after_configfile_is_explained(tmp_path):
    """`--configfile` takes several files; a YAML target written after it is merged as config."""
    target = tmp_path / "chosen.yaml"
    target.write_text(yaml.safe_dump({"po": {"t_stop": 1.0}, "do": {"t_stop": 0.5}}))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(DEFAULT))
    proc = snakemake("-n", "--configfile", str(config), str(target), config=None, workdir=tmp_path, check=False, timeout=120)
    assert proc.returncode != 0
    message = next(line for line in (proc.stdout + proc.stderr).splitlines() if "config key" in line)
    assert "'do', 'po'" in message and "put targets before --configfile" in message
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_method_sections_are_optional_and_default_to_the_embedded_values(tmp_path):
    """Without the four baseline sections, every job runs the same command as with them: the
    registry entries' defaults are the embedded default's values."""
    def commands(cfg: dict, name: str) -> list[str]:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        out = snakemake("-n", "-p", config=path, workdir=tmp_path, timeout=300).stdout
        # folder_provenance records the config file itself, which differs by construction.
        return sorted(line for line in out.splitlines() if "python -m diracbench." in line and "folder_provenance" not in line)

    # The embedded default's sections add grids for the `extended` task sr4 (config entries that
    # adding a task takes); without that task they are exactly the registry entries' defaults.
    core = without_key(DEFAULT, "sr4")
    core["extended"] = {"tasks": [], "methods": DEFAULT["extended"]["methods"]}
    bare = {k: v for k, v in core.items() if k not in ("dps", "ddrm", "pnp-admm", "admm-tv")}
    full, defaulted = commands(core, "full.yaml"), commands(bare, "bare.yaml")
    assert any("--method pnp-admm" in c for c in full) and defaulted == full
