# DiracDiffusion: degradation schedule, training per look-ahead, t_stop tuning on val, test sampling.
#
# results/<ds>/<task>/schedule/{schedule.csv,iterations.csv,schedule.png,schedule.pdf}   (schedule)
# results/<ds>/<task>/models/dirac-dt<dt>/{weights.pt,train_log.csv}                      (train_dirac)
# results/<ds>/<task>/dirac/tuning/{chosen.yaml,grid.csv,trajectory.csv}                  (tune_dirac)
# results/<ds>/<task>/dirac-<po|do>/recon/shards/test-<k>-of-<n>.npz                     (sample_dirac: shard k)
# results/<ds>/<task>/dirac-<po|do>/recon/{test.npz,trajectory.csv,posterior_samples.npz} (gather_dirac)

include: "dirac_common.smk"


rule schedule:
    input:
        unpack(schedule_file),
        train="results/{dataset}/data/train.npy",
        operator=rules.measure.output.operator,
        code=code("schedule.__main__"),
    output:
        table="results/{dataset}/{task}/schedule/schedule.csv",
        iterations="results/{dataset}/{task}/schedule/iterations.csv",
        png="results/{dataset}/{task}/schedule/schedule.png",
        pdf="results/{dataset}/{task}/schedule/schedule.pdf",
    params:
        settings=settings(
            lambda w: {
                "schedule": {k: v for k, v in config["tasks"][w.task]["schedule"].items() if k != "file"},
                "seed": config["seed"],
                "lpips": lpips_settings() if config["tasks"][w.task]["schedule"].get("metric") == "lpips" else None,
            }
        ),
        # A command fragment, so quoted here (a config path must never reach the shell unquoted).
        file=lambda w, input: f"--file {shlex.quote(input.file)}" if "file" in input.keys() else "",
        out_dir=folder_of("table"),
    log:
        log("schedule", "{dataset}_{task}"),
    benchmark:
        bench("schedule", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    # Training, the schedules and the measurements it needs go first: Snakemake starts the ready
    # job of highest priority whenever a core frees, so on the default's 2 cores (1 thread per
    # training) the three models train two at a time before the baseline jobs take the cores.
    # Among equal priorities Snakemake's order is its own: the 2000-step model may start second.
    priority: TRAINING_PRIORITY
    resources:
        mem_mb=planned("schedule", "mem_mb", 4000),
        runtime=planned("schedule", "runtime", 30),
    shell:
        "python -m diracbench.schedule --settings {params.settings:q} --train {input.train:q} "
        "--operator {input.operator:q} {params.file} --out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"


rule train_dirac:
    input:
        data="results/{dataset}/data/train.npy",
        manifest="results/{dataset}/data/train_manifest.csv",
        operator=rules.measure.output.operator,
        schedule=rules.schedule.output.table,
        code=code("train", "dirac.loss"),
    output:
        weights="results/{dataset}/{task}/models/dirac-dt{dt}/weights.pt",
        log_csv="results/{dataset}/{task}/models/dirac-dt{dt}/train_log.csv",
    wildcard_constraints:
        dt=r"[0-9]+(\.[0-9]+)?",
    params:
        device=gpu_device,
        settings=settings(dirac_train_settings),
        state_root="results/{dataset}/{task}/models/.state",
    log:
        log("train_dirac", "{dataset}_{task}_dt{dt}"),
    benchmark:
        bench("train_dirac", "{dataset}_{task}_dt{dt}")
    conda:
        "../../envs/torch.yaml"
    threads: lambda w: train_threads(dirac_execution(w))
    priority: TRAINING_PRIORITY
    resources:
        # Execution settings (training.execution) travel as resources: changing them never
        # reruns a finished model. mem_mb covers the resume state (training_common.smk).
        mem_mb=lambda w, input: train_mem_mb("dirac", dirac_training(w), dataset_config(w.dataset)["image_size"], dirac_execution(w), input.size_mb),
        runtime=planned_training_runtime("train_dirac"),
        gpu=planned("train_dirac", "gpu", lambda w: dirac_execution(w)["processes"]),
        train_procs=lambda w: dirac_execution(w)["processes"],
        micro_batch=lambda w: dirac_execution(w)["micro_batch"],
        activation_checkpointing=lambda w: int(dirac_execution(w)["activation_checkpointing"]),
        data_workers=lambda w: dirac_execution(w)["data_workers"],
    shell:
        # One process: plain python. Several: torchrun on this node (README: Training at scale).
        "if [ {resources.train_procs} -gt 1 ]; then launch='torchrun --standalone --nproc_per_node {resources.train_procs}'; "
        "else launch=python; fi; "
        "$launch -m diracbench.train --kind dirac --settings {params.settings:q} --data {input.data:q} "
        "--input operator={input.operator:q} --input schedule={input.schedule:q} "
        "--weights {output.weights:q} --log-csv {output.log_csv:q} --state-root {params.state_root:q} "
        "--micro-batch {resources.micro_batch} --activation-checkpointing {resources.activation_checkpointing} "
        "--data-workers {resources.data_workers} --time-budget-min {resources.runtime} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule tune_dirac:
    input:
        unpack(dirac_models),
        operator=rules.measure.output.operator,
        measurements=rules.measure.output.val,
        schedule=rules.schedule.output.table,
        code=code("tune", *method_modules(DIRAC_METHODS)),
    output:
        chosen="results/{dataset}/{task}/dirac/tuning/chosen.yaml",
        grid="results/{dataset}/{task}/dirac/tuning/grid.csv",
        trajectory="results/{dataset}/{task}/dirac/tuning/trajectory.csv",
    params:
        device=gpu_device,
        settings=settings(
            lambda w: {
                "variants": {v: dirac_task(w.task)[v] for v in ("po", "do")},
                **dirac_search(w.task),
                "tuning": {k: v for k, v in config["dirac"]["tuning"].items() if k != "max_images"},
                "max_images": config["dirac"]["tuning"]["max_images"],
                "batch_size": config["dirac"]["sampling"]["batch_size"],
                "lpips": lpips_settings(),
                "seed": config["seed"],
            }
        ),
        models=dirac_model_args,
    log:
        log("tune_dirac", "{dataset}_{task}"),
    benchmark:
        bench("tune_dirac", "{dataset}_{task}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    # The Dirac models' tuning and sampling follow their training at once (rule schedule): the
    # longest chains end early and the short baseline jobs fill the last minutes of a run.
    priority: TRAINING_PRIORITY
    resources:
        mem_mb=planned("tune_dirac", "mem_mb", 6000),
        runtime=planned("tune_dirac", "runtime", 120),
        gpu=planned("tune_dirac", "gpu", 1),
    shell:
        "python -m diracbench.tune --method dirac-po --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} {params.models} "
        "--input schedule={input.schedule:q} --out-chosen {output.chosen:q} --out-grid {output.grid:q} "
        "--out-trajectory {output.trajectory:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule sample_dirac:
    input:
        unpack(lambda w: dirac_models(w, (w.variant,))),
        operator=rules.measure.output.operator,
        measurements=rules.measure.output.test,
        schedule=rules.schedule.output.table,
        chosen=rules.tune_dirac.output.chosen,
        code=code("sample", *method_modules(DIRAC_METHODS)),
    output:
        shard="results/{dataset}/{task}/dirac-{variant}/recon/shards/test-{shard}-of-{shards}.npz",
    wildcard_constraints:
        variant="|".join(DIRAC_VARIANTS_ALL),
        shard=r"\d+",
        shards=r"\d+",
    params:
        device=gpu_device,
        settings=settings(dirac_sample_settings),
        models=dirac_model_args,
    log:
        log("sample_dirac", "{dataset}_{task}_{variant}.shard{shard}-of-{shards}"),
    benchmark:
        bench("sample_dirac", "{dataset}_{task}_{variant}.shard{shard}-of-{shards}")
    conda:
        "../../envs/torch.yaml"
    threads: JOB_THREADS
    priority: TRAINING_PRIORITY
    resources:
        mem_mb=planned("sample_dirac", "mem_mb", 6000),
        runtime=planned("sample_dirac", "runtime", 120),
        gpu=planned("sample_dirac", "gpu", 1),
    shell:
        "python -m diracbench.sample --method dirac-{wildcards.variant} --settings {params.settings:q} "
        "--operator {input.operator:q} --measurements {input.measurements:q} --tuned {input.chosen:q}:{wildcards.variant} "
        "{params.models} --input schedule={input.schedule:q} --shard {wildcards.shard}/{wildcards.shards} "
        "--out {output.shard:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


# As gather_method (methods.smk), plus the posterior samples made by the shard holding image 0.
localrules:
    gather_dirac,


rule gather_dirac:
    input:
        shards=shard_files(lambda w: f"dirac-{w.variant}"),
        code=code("gather"),
    output:
        recon="results/{dataset}/{task}/dirac-{variant}/recon/test.npz",
        trajectory="results/{dataset}/{task}/dirac-{variant}/recon/trajectory.csv",
        posterior="results/{dataset}/{task}/dirac-{variant}/recon/posterior_samples.npz",
    wildcard_constraints:
        variant="|".join(DIRAC_VARIANTS_ALL),
    log:
        log("gather_dirac", "{dataset}_{task}_{variant}"),
    benchmark:
        bench("gather_dirac", "{dataset}_{task}_{variant}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m diracbench.gather --shards {input.shards:q} --out {output.recon:q} --trajectory {output.trajectory:q} "
        "--extra-out posterior_samples={output.posterior:q} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    expand(rules.schedule.output.png, dataset=DATASETS, task=TASKS)
    + expand(rules.gather_dirac.output.recon, dataset=DATASETS, task=TASKS, variant=DIRAC_VARIANTS)
)
