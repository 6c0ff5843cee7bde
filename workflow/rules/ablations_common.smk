# Helpers of workflow/rules/ablations.smk (kept apart so rule files hold rules only).
ABLATION_DEFAULTS = {"look_aheads": [0.0, 0.25, 0.5, 1.0], "zeta": [0.2, 0.5, 1.0], "max_images": 16, "images": 2}
ABLATIONS = {**ABLATION_DEFAULTS, **config.get("ablations", {})}


def ablation_models(wildcards):
    return {f"model_dt{dt_name(dt).replace('.', '_')}": model_path(wildcards, dt) for dt in sorted({float(d) for d in ABLATIONS["look_aheads"]})}


def _ablation_search_settings(wildcards, search):
    """Settings of a `tune --method dirac-po` run on val with the given search space."""
    return {
        "variants": {v: dirac_task(wildcards.task)[v] for v in ("po", "do")},
        "search": search,
        "tuning": {"po_metric": "lpips", "do_metric": "psnr", "lpips_every": config["dirac"]["tuning"]["lpips_every"]},
        "max_images": ABLATIONS["max_images"],
        "batch_size": config["dirac"]["sampling"]["batch_size"],
        "lpips": lpips_settings(),
        "seed": config["seed"],
    }


def ablation_guidance_settings(wildcards):
    """Fig. 8: PO's search over the guidance schemes and ζ."""
    zetas = [float(z) for z in ABLATIONS["zeta"]]
    return _ablation_search_settings(wildcards, {"po": {"guidance": {"none": [0], "std": zetas, "error": zetas}}})


def ablation_path_settings(wildcards):
    """Fig. 9's second protocol: each Δt model with its own t_stop, i.e. the tuning search over model_dt."""
    dts = sorted({float(d) for d in ABLATIONS["look_aheads"]})
    return _ablation_search_settings(wildcards, {v: {"model_dt": dts} for v in ("po", "do")})


def ablation_lookahead_settings(wildcards):
    return {
        "variants": {v: dirac_task(wildcards.task)[v] for v in ("po", "do")},
        "look_aheads": sorted({float(d) for d in ABLATIONS["look_aheads"]}),
        "max_images": ABLATIONS["max_images"],
        "images": ABLATIONS["images"],
        "batch_size": config["dirac"]["sampling"]["batch_size"],
        "lpips": lpips_settings(),
        "seed": config["seed"],
    }
