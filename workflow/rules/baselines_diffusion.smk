# The DDPM prior of the diffusion baselines (one per dataset, shared by both tasks); the methods
# that need it (registry entries with inputs: [prior], e.g. DPS, DDRM) run under methods.smk.
#
# results/<ds>/prior/{weights.pt,train_log.csv}                    (train_prior; state in prior/.state)
#
# A dataset listed under prior.pretrained uses that published checkpoint instead of a trained
# prior: the jobs that need a prior take the checkpoint file as input and train_prior never runs for it.

include: "baselines_diffusion_common.smk"


rule train_prior:
    input:
        data="results/{dataset}/data/train.npy",
        manifest="results/{dataset}/data/train_manifest.csv",
        code=code("train", "prior.loss"),
    output:
        weights="results/{dataset}/prior/weights.pt",
        log_csv="results/{dataset}/prior/train_log.csv",
    params:
        device=gpu_device,
        # Same network and budget as each Dirac model (config `training:`), only the loss differs.
        settings=settings(
            lambda w: {
                "network": config["training"]["network"],
                "image_size": dataset_config(w.dataset)["image_size"],
                "training": {**science_training(config["training"]), "seed": training_seed(w.dataset)},
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
    priority: TRAINING_PRIORITY
    resources:
        # As train_dirac: execution settings as resources; mem_mb covers the resume state.
        mem_mb=lambda w, input: train_mem_mb("ddpm", config["training"], dataset_config(w.dataset)["image_size"], prior_execution(w), input.size_mb),
        runtime=planned_training_runtime("train_prior"),
        gpu=planned("train_prior", "gpu", lambda w: prior_execution(w)["processes"]),
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
