rule holdout:
    """One C-score holdout model: trained on a random fraction of D, predicts all of D."""
    output:
        predictions=f"{RESULTS}/proxies/holdout/model{{model_id}}.npz",
    log:
        f"{LOGS}/proxies/holdout_model{{model_id}}.log",
    benchmark:
        f"{BENCHMARKS}/proxies/holdout_model{{model_id}}.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("dataset", "model", "training", "device", "proxies"),
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} holdout --config {params.config_file} --model-id {wildcards.model_id}"
        " --threads {threads} --out {output.predictions} > {log} 2>&1"


rule proxies:
    """EL2N, forgetting events, learning speed and C-scores of every training example."""
    input:
        runs=expand(f"{RESULTS}/train/seed{{seed}}", seed=SEEDS),
        holdout=holdout_files(),
        published=published_cscores(),
    output:
        table=f"{RESULTS}/proxies/proxies.parquet",
    log:
        f"{LOGS}/proxies/proxies.log",
    benchmark:
        f"{BENCHMARKS}/proxies/proxies.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        holdout=lambda wildcards, input: f"--holdout {input.holdout}" if input.holdout else "",
        digest=config_digest("proxies"),
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} proxies --config {params.config_file} --runs {input.runs} {params.holdout}"
        " --out {output.table} > {log} 2>&1"


rule correlations:
    """Spearman and Kendall of privacy loss with each proxy; CIs resample seeds (for P) and examples."""
    input:
        scores=f"{RESULTS}/scores.parquet",
    output:
        table=f"{RESULTS}/proxies/correlations.csv",
    log:
        f"{LOGS}/proxies/correlations.log",
    benchmark:
        f"{BENCHMARKS}/proxies/correlations.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("proxies", "groups"),
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} correlations --config {params.config_file} --scores {input.scores}"
        " --out {output.table} > {log} 2>&1"
