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
                "image_size": config["datasets"][w.dataset]["image_size"],
                "training": {**config["training"], "seed": config["seed"]},
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
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    shell:
        "python -m diracbench.train --kind ddpm --settings {params.settings:q} --data {input.data:q} "
        "--weights {output.weights:q} --log-csv {output.log_csv:q} --state-root {params.state_root:q} "
        "--time-budget-min {resources.runtime} --device {params.device:q} --threads {threads} > {log:q} 2>&1"
