# Diffusion baselines: the DDPM prior (one per dataset, shared by both tasks), DPS and DDRM.
#
# results/<ds>/prior/{weights.pt,train_log.csv}                    (train_prior; state in prior/.state)
# results/<ds>/<task>/<dps|ddrm>/tuning/{chosen.yaml,grid.csv}     (tune_dps, tune_ddrm: val split)
# results/<ds>/<task>/<dps|ddrm>/recon/{test.npz,trajectory.csv}   (sample_dps, sample_ddrm: test split)
#
# A dataset listed under prior.pretrained uses that published checkpoint instead of a trained
# prior: its DPS/DDRM jobs take the checkpoint file as input and train_prior never runs for it.

include: "baselines_diffusion_common.smk"


rule train_prior:
    input:
        data="results/{dataset}/data/train.npy",
        manifest="results/{dataset}/data/train_manifest.csv",
        code=code("train.py", "training", "nn", "prior/__init__.py", "prior/schedule.py", "prior/loss.py", "data", "runtime.py"),
    output:
        weights="results/{dataset}/prior/weights.pt",
        log_csv="results/{dataset}/prior/train_log.csv",
    params:
        device=gpu_device,
        # Same network and budget as each Dirac model (config `training:`), only the loss differs.
        settings=settings(
            lambda w: {
                "network": config["training"]["network"],
                "image_size": config["datasets"][w.dataset]["image_size"],
                "training": {**science_training(config["training"]), "seed": config["seed"]},
                "loss": {k: config["prior"][k] for k in ("beta_start", "beta_end", "num_timesteps")},
            }
        ),
        state_root="results/{dataset}/prior/.state",
    log:
        log("train_prior", "{dataset}"),
    benchmark:
        bench("train_prior", "{dataset}")
    conda:
        "../../envs/torch.yaml"
    threads: lambda w: train_threads(prior_execution(w))
    resources:
        # As train_dirac: execution settings as resources; mem_mb covers the resume state.
        mem_mb=lambda w, input: train_mem_mb("ddpm", config["training"], config["datasets"][w.dataset]["image_size"], prior_execution(w), input.size_mb),
        runtime=240,
        gpu=lambda w: prior_execution(w)["processes"],
        train_procs=lambda w: prior_execution(w)["processes"],
        micro_batch=lambda w: prior_execution(w)["micro_batch"],
        activation_checkpointing=lambda w: int(prior_execution(w)["activation_checkpointing"]),
        data_workers=lambda w: prior_execution(w)["data_workers"],
    shell:
        # One process: plain python. Several: torchrun on this node (README: Training at scale).
        "if [ {resources.train_procs} -gt 1 ]; then launch='torchrun --standalone --nproc_per_node {resources.train_procs}'; "
        "else launch=python; fi; "
        "$launch -m diracbench.train --kind ddpm --settings {params.settings:q} --data {input.data:q} "
        "--weights {output.weights:q} --log-csv {output.log_csv:q} --state-root {params.state_root:q} "
        "--micro-batch {resources.micro_batch} --activation-checkpointing {resources.activation_checkpointing} "
        "--data-workers {resources.data_workers} --time-budget-min {resources.runtime} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule tune_dps:
    input:
        prior=prior_weights,
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/val.npz",
        code=code("tune.py", "methods/dps.py", *PRIOR_CODE),
    output:
        chosen="results/{dataset}/{task}/dps/tuning/chosen.yaml",
        grid="results/{dataset}/{task}/dps/tuning/grid.csv",
    params:
        device=gpu_device,
        settings=settings(diffusion_settings("dps", "val")),
    log:
        log("tune_dps", "{dataset}_{task}"),
    benchmark:
        bench("tune_dps", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    shell:
        "python -m diracbench.tune --method dps --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --input prior={input.prior:q} "
        "--out-chosen {output.chosen:q} --out-grid {output.grid:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule sample_dps:
    input:
        prior=prior_weights,
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/test.npz",
        chosen=rules.tune_dps.output.chosen,
        code=code("sample.py", "contracts.py", "methods/dps.py", *PRIOR_CODE),
    output:
        recon="results/{dataset}/{task}/dps/recon/test.npz",
        trajectory="results/{dataset}/{task}/dps/recon/trajectory.csv",
    params:
        device=gpu_device,
        settings=settings(diffusion_settings("dps", "test")),
    log:
        log("sample_dps", "{dataset}_{task}"),
    benchmark:
        bench("sample_dps", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    shell:
        "python -m diracbench.sample --method dps --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --tuned {input.chosen:q} --input prior={input.prior:q} "
        "--out {output.recon:q} --trajectory {output.trajectory:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule tune_ddrm:
    input:
        prior=prior_weights,
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/val.npz",
        code=code("tune.py", "methods/ddrm.py", *PRIOR_CODE),
    output:
        chosen="results/{dataset}/{task}/ddrm/tuning/chosen.yaml",
        grid="results/{dataset}/{task}/ddrm/tuning/grid.csv",
    params:
        device=gpu_device,
        settings=settings(diffusion_settings("ddrm", "val")),
    log:
        log("tune_ddrm", "{dataset}_{task}"),
    benchmark:
        bench("tune_ddrm", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    shell:
        "python -m diracbench.tune --method ddrm --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --input prior={input.prior:q} "
        "--out-chosen {output.chosen:q} --out-grid {output.grid:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule sample_ddrm:
    input:
        prior=prior_weights,
        operator="results/{dataset}/{task}/operator.json",
        measurements="results/{dataset}/{task}/measurements/test.npz",
        chosen=rules.tune_ddrm.output.chosen,
        code=code("sample.py", "contracts.py", "methods/ddrm.py", *PRIOR_CODE),
    output:
        recon="results/{dataset}/{task}/ddrm/recon/test.npz",
        trajectory="results/{dataset}/{task}/ddrm/recon/trajectory.csv",
    params:
        device=gpu_device,
        settings=settings(diffusion_settings("ddrm", "test")),
    log:
        log("sample_ddrm", "{dataset}_{task}"),
    benchmark:
        bench("sample_ddrm", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    shell:
        "python -m diracbench.sample --method ddrm --settings {params.settings:q} --operator {input.operator:q} "
        "--measurements {input.measurements:q} --tuned {input.chosen:q} --input prior={input.prior:q} "
        "--out {output.recon:q} --trajectory {output.trajectory:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    expand("results/{dataset}/{task}/{method}/recon/test.npz", dataset=DATASETS, task=TASKS, method=DIFFUSION_BASELINES)
)
