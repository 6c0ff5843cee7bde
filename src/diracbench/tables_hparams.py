"""Tables 2 and 3 of the paper: network hyper-parameters and sampling hyper-parameters.

`python -m diracbench.tables_hparams` writes, per dataset,
- Table 2 (`<stem>_table2_networks.{md,tex,csv}`): every network the run uses (one Dirac model
  per task and loss look-ahead Δt, the DDPM prior of DPS/DDRM) with its architecture, training
  budget and parameter count. The count comes from the weights file when it exists (the weights
  actually used); otherwise from the config, built on the meta device, marked "not run".
- Table 3 (`<stem>_table3_sampling.{md,tex,csv}`): Dirac's sampler settings per task and variant
  (model Δt, step dt, t_stop, NFE, estimator, guidance scheme and ζ, output, how each was chosen),
  read from the tuning rule's `chosen.yaml` (values chosen on val, marked †) and the config (fixed
  values); "not run" where a value would be tuned but no chosen.yaml exists yet.
Both carry the paper's values beside ours (dirac-method.md §5.5 and §6.4: the official configs;
the paper's own Table 2-3 cells were lost in extraction). Datasets other than the presets' are
compared with the paper's face (FFHQ) setting, for reference.

Two ways to run it: from the workflow (rule `tables_hparams`: `--settings` and `--input NAME=PATH`
for every file), or on a config alone, e.g. for a preset whose models were never trained here:
    python -m diracbench.tables_hparams --config workflow/presets/paper-ffhq.yaml --out-dir results/tables
which reads whichever of the expected files exist under the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from diracbench import cli
from diracbench.errors import UserError
from diracbench.metrics.registry import metric
from diracbench.tasks import registry as task_registry
from diracbench.tasks import task_spec, task_title
from diracbench.textables import to_latex, to_markdown

VARIANTS = ("po", "do")
DIRAC_METHODS = ("dirac-po", "dirac-do")
PRIOR_METHODS = ("dps", "ddrm")
NOT_RUN = "not run"
TUNED = "†"

# The official per-task sampling settings (dirac-method.md §6.4).
_P = dict(estimator="look_ahead", guidance_sign="official")
PAPER_SAMPLING = {
    "ffhq": {
        ("deblur", "po"): dict(_P, model_dt=1.0, dt=0.02, t_stop=0.25, nfe=38, guidance="std", zeta=0.5, output="x0_hat"),
        ("deblur", "do"): dict(_P, model_dt=0.0, dt=0.02, t_stop=1.0, nfe=1, guidance="std", zeta=0.5, output="x0_hat"),
        ("inpaint", "po"): dict(_P, model_dt=0.0, dt=0.005, t_stop=0.0, nfe=200, guidance="error", zeta=1.0, output="iterate"),
        ("inpaint", "do"): dict(_P, model_dt=0.0, dt=0.2, t_stop=1.0, nfe=1, guidance="none", zeta=None, output="x0_hat"),
    },
    "imagenet": {
        ("deblur", "po"): dict(_P, model_dt=1.0, dt=0.02, t_stop=0.0, nfe=50, estimator="look_back", guidance="std", zeta=0.2, output="x0_hat"),
        ("deblur", "do"): dict(_P, model_dt=1.0, dt=0.02, t_stop=0.7, nfe=16, estimator="look_back", guidance="std", zeta=1.5, output="x0_hat"),
        ("inpaint", "po"): dict(_P, model_dt=0.0, dt=0.01, t_stop=0.0, nfe=100, guidance="none", zeta=None, output="iterate"),
        ("inpaint", "do"): dict(_P, model_dt=0.0, dt=0.01, t_stop=1.0, nfe=1, guidance="none", zeta=None, output="x0_hat"),
    },
}
_BASE = dict(model_channels=128, channel_mult=[1, 1, 2, 2, 2, 2, 2], num_blocks=2, attn_resolutions=[16], dropout=0.1, parameters=67_745_027, image_size=256)
_LARGE = dict(model_channels=256, channel_mult=[1, 1, 2, 2, 4, 4], num_blocks=2, attn_resolutions=[32, 16, 8], dropout=0.0, parameters=520_915_459, image_size=256)
# (dirac-method.md §5.3-5.5; the priors: baselines, App. G.1.)
PAPER_NETWORKS = {
    "ffhq": {"dirac": {("deblur", 0.0): _BASE, ("deblur", 1.0): _BASE, ("inpaint", 0.0): _BASE}, "prior": "SDEdit CelebA-HQ DDPM, 113,673,219 parameters (paper: 126M)", "training": "225k steps × batch 32, lr 1e-4, no EMA"},
    "imagenet": {"dirac": {("deblur", 1.0): _BASE, ("inpaint", 0.0): _LARGE}, "prior": "guided-diffusion ImageNet 256, 552,814,086 parameters", "training": "800k steps × batch 32, lr 1e-4, EMA 0.9999 for inpainting only"},
}
PAPER_LABEL = {"ffhq": "paper (CelebA-HQ/FFHQ)", "imagenet": "paper (ImageNet)"}


def paper_setting(dataset: str) -> tuple[str, bool]:
    """(key of the paper's setting, exact): the presets' datasets match; others use FFHQ for reference."""
    name = dataset.lower()
    if "imagenet" in name:
        return "imagenet", True
    if "ffhq" in name or "celeba" in name:
        return "ffhq", True
    return "ffhq", False


def dt_name(dt: float) -> str:
    return f"{float(dt):g}"


def used_model_dts(dirac_task: dict) -> list[float]:
    """Look-aheads whose models the run trains: the variants' model_dt and their search spaces'."""
    dts = {float(dirac_task[v]["model_dt"]) for v in VARIANTS}
    for v in VARIANTS:
        dts.update(float(d) for d in (dirac_task.get("search") or {}).get(v, {}).get("model_dt", []))
    return sorted(dts)


def hparams_settings(config: dict, dataset: str) -> dict:
    """The config subset the tables show (torch-free: the Snakefile calls it)."""
    methods = list(config["methods"])
    return {
        "dataset": dataset,
        "image_size": int(config["datasets"][dataset]["image_size"]),
        "tasks": sorted(config["tasks"]),
        "methods": methods,
        "training": config["training"],
        "dirac": {t: config["dirac"]["tasks"][t] for t in sorted(config["tasks"]) if t in config["dirac"]["tasks"]} if any(m in methods for m in DIRAC_METHODS) else {},
        "tuning": {k: config["dirac"]["tuning"][k] for k in ("po_metric", "do_metric", "max_images")},
        "prior": config["prior"]["pretrained"].get(dataset) if any(m in methods for m in PRIOR_METHODS) else None,
        "prior_trained": any(m in methods for m in PRIOR_METHODS) and dataset not in config["prior"]["pretrained"],
    }


def expected_inputs(config: dict, dataset: str) -> dict[str, str]:
    """NAME -> path of every file the tables read (torch-free: the Snakefile calls it)."""
    s = hparams_settings(config, dataset)
    out = {}
    for task, spec in s["dirac"].items():
        out[f"chosen__{task}"] = f"results/{dataset}/{task}/dirac/tuning/chosen.yaml"
        for dt in used_model_dts(spec):
            out[f"weights__{task}__{dt_name(dt)}"] = f"results/{dataset}/{task}/models/dirac-dt{dt_name(dt)}/weights.pt"
    if s["prior_trained"]:
        out["weights__prior"] = f"results/{dataset}/prior/weights.pt"
    elif s["prior"]:
        out["weights__prior"] = str(s["prior"]["path"])
    return out


# ---------------------------------------------------------------------------------------------
# Table 2


def _count_dirac_or_ddpm(kind: str, network: dict, image_size: int, state: dict | None) -> int:
    import torch

    from diracbench.nn.models import build_model

    with torch.device("meta"):
        model = build_model(kind, network, image_size)
    names = [n for n, _ in model.named_parameters()]
    if state is None:
        return sum(p.numel() for p in model.parameters())
    missing = [n for n in names if n not in state]
    if missing:
        raise UserError(f"a weights file lacks the parameters {missing[:3]}...; it does not fit the architecture it declares")
    return sum(int(state[n].numel()) for n in names)


def _schedule(training: dict) -> str:
    """The learning-rate schedule and CPU precision, when the config sets them (absent: nothing)."""
    parts = []
    if training.get("lr_warmup_steps"):
        parts.append(f"{training['lr_warmup_steps']} warm-up steps")
    if training.get("lr_decay", "constant") != "constant":
        parts.append(f"{training['lr_decay']} decay")
    if training.get("cpu_bf16"):
        parts.append("bf16 on CPU")
    return f" ({', '.join(parts)})" if parts else ""


def _network_row(label: str, kind: str, network: dict, image_size: int, training: dict, path: Path | None, paper: str) -> dict:
    source = NOT_RUN
    state = None
    if path is not None and path.is_file():
        from diracbench.nn.models import read_weights

        record = read_weights(path, kind)
        network, image_size = record["network"], int(record["image_size"])  # what was actually used
        state = record["state_dict"]
        source = str(path)
    count = _count_dirac_or_ddpm(kind, network, image_size, state)
    ema = training.get("ema_decay")
    return {
        "model": label,
        "channels": str(network["model_channels"]),
        "channel_mult": ",".join(str(c) for c in network["channel_mult"]),
        "res_blocks": str(network["num_blocks"]),
        "attention_px": ",".join(str(a) for a in network["attn_resolutions"]) or "–",
        "dropout": f"{network['dropout']:g}",
        "image_px": str(image_size),
        "parameters": f"{count:,}" + ("" if source != NOT_RUN else f" ({NOT_RUN})"),
        "training": f"{training['steps']:,} steps × batch {training['batch_size']}, lr {training['lr']:g}{_schedule(training)}, EMA {'none' if ema is None else f'{ema:g}'}",
        "weights": source,
        "paper": paper,
    }


def _paper_network(p: dict | None) -> str:
    if not p:
        return "–"
    attn = ",".join(str(a) for a in p["attn_resolutions"])
    return f"NCSN++ {p['model_channels']} ch, mult {','.join(str(c) for c in p['channel_mult'])}, {p['num_blocks']} blocks, attn {attn} px, dropout {p['dropout']:g}, {p['image_size']} px: {p['parameters']:,} parameters"


def table2(settings: dict, inputs: dict[str, Path]) -> tuple[list[str], list[list[str]], list[str], list[dict]]:
    key, exact = paper_setting(settings["dataset"])
    paper = PAPER_NETWORKS[key]
    rows = []
    for task, spec in settings["dirac"].items():
        training = {**settings["training"], **(spec.get("training") or {})}
        for dt in used_model_dts(spec):
            label = f"Dirac, {task}, loss look-ahead Δt = {dt_name(dt)}"
            ref = paper["dirac"].get((task, dt))
            note = _paper_network(ref) if ref else "not trained in the paper"
            rows.append(_network_row(label, "dirac", training["network"], settings["image_size"], training, inputs.get(f"weights__{task}__{dt_name(dt)}"), note))
    if settings["prior_trained"]:
        rows.append(_network_row("DDPM prior (DPS, DDRM)", "ddpm", settings["training"]["network"], settings["image_size"], settings["training"], inputs.get("weights__prior"), paper["prior"]))
    elif settings["prior"]:
        rows.append(_pretrained_row(settings["prior"], inputs.get("weights__prior"), paper["prior"]))
    header = ["Model", "Channels", "Channel mult.", "Res. blocks", "Attention at (px)", "Dropout", "Image (px)", "Parameters", "Training", "Weights", PAPER_LABEL[key]]
    cells = [[r[k] for k in ("model", "channels", "channel_mult", "res_blocks", "attention_px", "dropout", "image_px", "parameters", "training", "weights", "paper")] for r in rows]
    notes = [
        f"Parameters: counted from the weights file the run used; '{NOT_RUN}': counted from the config on the meta device (no weights yet).",
        f"Paper column: the official configs (dirac-method.md §5.4-5.5){'' if exact else '; this dataset is not one of the paper’s, so its face (FFHQ) setting is shown for reference'}. Paper training: {paper['training']}.",
    ]
    return header, cells, notes, rows


def _pretrained_row(prior: dict, path: Path | None, paper: str) -> dict:
    from diracbench.prior.pretrained import pretrained_format, read_state_dict

    spec = pretrained_format(prior["format"])
    source, count = NOT_RUN, f"{spec.parameters:,} (published; {NOT_RUN})"
    if path is not None and Path(path).is_file():
        import torch

        state = read_state_dict(path)
        with torch.device("meta"):
            model = spec.build()
        count = f"{sum(int(state[n].numel()) for n, _ in model.named_parameters() if n in state):,}"
        source = str(path)
    return {"model": "DDPM prior (DPS, DDRM), published", "channels": spec.description, "channel_mult": "", "res_blocks": "", "attention_px": "", "dropout": "", "image_px": str(spec.image_size), "parameters": count, "training": "pretrained", "weights": source, "paper": paper}


# ---------------------------------------------------------------------------------------------
# Table 3

SETTINGS = (
    ("model_dt", "model (loss look-ahead Δt)"),
    ("dt", "step dt (steps)"),
    ("t_stop", "t_stop"),
    ("nfe", "NFE"),
    ("estimator", "estimator R"),
    ("guidance", "guidance"),
    ("zeta", "ζ"),
    ("guidance_sign", "guidance sign"),
    ("output", "output"),
    ("selected_by", "chosen on val by"),
)
_GUIDANCE = {"none": "none", "std": "std-scaled", "error": "error-scaled"}
_OUTPUT = {"x0_hat": "x̂₀", "iterate": "final iterate"}


def _fmt(key: str, value, hp: dict) -> str:
    if value is None:
        return "–"
    if key == "model_dt":
        return f"Δt = {float(value):g}"
    if key == "dt":
        return f"{float(value):g} ({round(1 / float(value))})"
    if key == "guidance":
        return _GUIDANCE.get(value, str(value))
    if key == "zeta":
        return "–" if hp.get("guidance") == "none" else f"{float(value):g}"
    if key == "output":
        return _OUTPUT.get(value, str(value))
    if key in ("t_stop",):
        return f"{float(value):g}"
    return str(value)


def _nfe(hp: dict) -> int:
    from diracbench.dirac.sampler import SamplerSettings

    return SamplerSettings.from_dict(hp).nfe()


def _read_chosen(path: Path | None, task: str) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not all(v in data for v in VARIANTS):
        raise UserError(f"{path} lacks po/do entries; rerun tune_dirac for {task}")
    return data


def sampling_values(settings: dict, inputs: dict[str, Path]) -> list[dict]:
    """One record per task, variant and setting: value, its source and the paper's value."""
    key, _ = paper_setting(settings["dataset"])
    paper = PAPER_SAMPLING[key]
    records = []
    for task, spec in settings["dirac"].items():
        path = inputs.get(f"chosen__{task}")
        chosen = _read_chosen(path, task)
        for v in VARIANTS:
            hp = dict(spec[v])
            tuned_keys: set[str] = set()
            if chosen is not None:
                from diracbench.contracts import check_chosen

                entry = chosen[v]
                check_chosen(Path(path), entry, v, {**spec[v], "variant": v})
                # Chosen on val: t_stop when the config says 'tune', and what this variant searched.
                searched = set((spec.get("search") or {}).get(v, {}))
                tuned_keys = searched | ({"zeta"} if "guidance" in searched else set()) | ({"t_stop"} if spec[v]["t_stop"] == "tune" else set())
                for k, val in entry.items():
                    if k not in ("nfe", "selected_by"):
                        hp[k] = val
                hp["nfe"] = entry["nfe"]
                sel = entry.get("selected_by") or {}
                hp["selected_by"] = "config" if sel.get("by") == "config" else f"{sel.get('by')} ({sel.get('n_images')} {sel.get('split', 'val')} images)"
            else:
                hp["nfe"] = _nfe(hp) if hp["t_stop"] != "tune" else NOT_RUN
                hp["selected_by"] = NOT_RUN if hp["t_stop"] == "tune" else "config"
            ref = paper.get((task, v), {})
            for k, _label in SETTINGS:
                raw = hp.get(k)
                if raw == "tune":
                    text, source = NOT_RUN, NOT_RUN
                elif raw == NOT_RUN:
                    text, source = NOT_RUN, NOT_RUN
                else:
                    text = _fmt(k, raw, hp) if k not in ("nfe", "selected_by") else str(raw)
                    source = "val" if k in tuned_keys or (k == "nfe" and "t_stop" in tuned_keys) else ("tuning" if k == "selected_by" and chosen is not None else "config")
                paper_text = "–" if k == "selected_by" else (_fmt(k, ref.get(k), ref) if ref else "–")
                if k == "guidance_sign" and ref:
                    paper_text = "official (+)"
                records.append({"dataset": settings["dataset"], "task": task, "variant": v, "setting": k, "value": text, "source": source, "paper": paper_text})
    return records


def table3(settings: dict, inputs: dict[str, Path]) -> tuple[list[str], list[list[str]], list[str], list[dict]]:
    key, exact = paper_setting(settings["dataset"])
    records = sampling_values(settings, inputs)
    pairs = [(t, v) for t in settings["dirac"] for v in VARIANTS]
    header = ["Setting"]
    for t, v in pairs:
        header += [f"{t} {v.upper()}", "paper"]
    by = {(r["task"], r["variant"], r["setting"]): r for r in records}
    rows = []
    for k, label in SETTINGS:
        row = [label]
        for t, v in pairs:
            r = by[(t, v, k)]
            row += [r["value"] + (f" {TUNED}" if r["source"] == "val" and r["value"] != "–" else ""), r["paper"]]
        rows.append(row)
    tuning = settings["tuning"]
    auto = ", ".join(f"{metric(task_spec(t).objective).label or task_spec(t).objective.upper()} for {task_title(t)}" for t in settings["dirac"] if t in task_registry())
    notes = [
        f"{TUNED}: chosen on val by rule tune_dirac (PO objective {tuning['po_metric']}, DO objective {tuning['do_metric']}; auto = {auto}); other values are fixed in the config; '{NOT_RUN}': to be tuned, no chosen.yaml yet.",
        "Paper columns: the official reconstruction configs (dirac-method.md §6.4); the paper's own Table 3 cells were lost in extraction, its guidance row agrees. The official sampler adds the guidance gradient (sign 'official'); here 'descent' follows the derivation.",
    ]
    if not exact:
        notes.append("This dataset is not one of the paper's; its face (CelebA-HQ/FFHQ) settings are shown for reference.")
    return header, rows, notes, records


# ---------------------------------------------------------------------------------------------


def write_tables(settings: dict, inputs: dict[str, Path], stem: Path) -> list[Path]:
    """Tables 2 and 3 as md/tex/csv/html beside `stem` (always both; a table without rows says why)."""
    import pandas as pd

    from diracbench.io import OutputSet
    from diracbench.textables import to_html

    ds = settings["dataset"]
    paths = []
    parts = (
        ("table2_networks", f"Table 2 ({ds}): networks, their training and parameter counts", table2, "networks"),
        ("table3_sampling", f"Table 3 ({ds}): Dirac sampling hyper-parameters per task and variant, beside the {PAPER_LABEL[paper_setting(ds)[0]]}", table3, "sampling"),
    )
    with OutputSet() as out:
        for name, title, build, label in parts:
            if name == "table3_sampling" and not settings["dirac"]:
                h, rows, notes, recs = ["Setting"], [], ["No Dirac method is configured."], []
            else:
                h, rows, notes, recs = build(settings, inputs)
            base = stem.with_name(f"{stem.name}_{name}")
            out.write_text(base.with_suffix(".md"), to_markdown(title, h, rows, notes))
            out.write_text(base.with_suffix(".tex"), to_latex(title, h, rows, notes, label=f"tab:{ds}-{label}"))
            out.write_text(base.with_suffix(".html"), to_html(title, h, rows, notes))
            frame = pd.DataFrame(recs) if name == "table3_sampling" else pd.DataFrame([{"dataset": ds, **r} for r in recs])
            frame.to_csv(out.path(base.with_suffix(".csv")), index=False)
            paths += [base.with_suffix(e) for e in (".md", ".tex", ".csv", ".html")]
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.tables_hparams", __doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="a whole config file (e.g. a preset) instead of --settings")
    parser.add_argument("--dataset", default=None, help="with --config: one dataset (default: all)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--out-stem", type=Path, default=None, help="results/tables/<dataset> (with --settings)")
    parser.add_argument("--out-dir", type=Path, default=None, help="with --config: the folder for <dataset>_table{2,3}_*")
    args = parser.parse_args(argv)
    if bool(args.settings) == (args.config is not None):
        raise UserError("give either --settings (from the workflow) or --config FILE")
    if args.config is not None:
        import yaml

        if not args.config.is_file():
            raise UserError(f"config file {args.config} does not exist")
        config = yaml.safe_load(args.config.read_text())
        datasets = [args.dataset] if args.dataset else sorted(config["datasets"])
        for ds in datasets:
            if ds not in config["datasets"]:
                raise UserError(f"--dataset {ds!r} is not in {args.config} (datasets: {sorted(config['datasets'])})")
            inputs = {k: Path(p) for k, p in expected_inputs(config, ds).items()}
            for p in write_tables(hparams_settings(config, ds), inputs, (args.out_dir or Path("results/tables")) / ds):
                print(p)
        return
    settings = args.settings
    inputs = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--input {item!r} must be NAME=PATH")
        inputs[name] = Path(path)
    if args.out_stem is None:
        raise UserError("--out-stem is required with --settings")
    for p in write_tables(settings, inputs, args.out_stem):
        print(p)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.tables_hparams")
