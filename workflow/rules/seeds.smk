# The `seeds` target: Table 1 and the claims with their spread over training seeds. Not part of `all`.
#
# results/<ds>-seed<N>/...                                   (the learned methods, by the usual rules)
# results/seeds/tables/<ds>_table1_seeds.{md,csv,html}       (mean ± spread; per-seed CSV columns)
# results/seeds/tables/<ds>_claims_seeds.{md,csv,html}       (claims: seeds holding, beyond spread)
#
# A replicate `<ds>-seed<N>` (config seeds.training) is <ds> with training seed N for the Dirac
# models and the DDPM prior: same data, measurements and sampling seeds, so the spread is the
# training seed's alone. Methods that train nothing are read from the main run.
include: "seeds_common.smk"


rule seeds_tables:
    input:
        unpack(seeds_inputs),
        code=code("seeds"),
    output:
        table=multiext("results/seeds/tables/{dataset}_table1_seeds", ".md", ".csv", ".html"),
        claims=multiext("results/seeds/tables/{dataset}_claims_seeds", ".md", ".csv", ".html"),
    params:
        settings=settings(seeds_settings),
        inputs=claims_input_args,
        out_stem="results/seeds/tables/{dataset}",
    log:
        log("seeds_tables", "{dataset}"),
    benchmark:
        bench("seeds_tables", "{dataset}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m diracbench.seeds --settings {params.settings:q} {params.inputs} "
        "--out-stem {params.out_stem:q} --threads {threads} > {log:q} 2>&1"


rule seeds:
    input:
        expand("results/seeds/tables/{dataset}_claims_seeds.md", dataset=DATASETS),
