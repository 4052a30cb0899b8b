rule grad_norms:
    """Gradient norm of every training example at every checkpoint of one run."""
    input:
        run=f"{RESULTS}/train/seed{{seed}}",
    output:
        norms=f"{RESULTS}/privacy/seed{{seed}}/norms.npz",
    log:
        f"{LOGS}/privacy/grad_norms_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/privacy/grad_norms_seed{{seed}}.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("dataset", "model", "device"),
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} grad-norms --config {params.config_file} --run {input.run}"
        " --threads {threads} --out {output.norms} > {log} 2>&1"


rule privacy_loss:
    """Per-instance privacy losses P(x, alpha): checkpoint and online estimators, worst case."""
    input:
        runs=expand(f"{RESULTS}/train/seed{{seed}}", seed=SEEDS),
        norms=expand(f"{RESULTS}/privacy/seed{{seed}}/norms.npz", seed=SEEDS),
    output:
        table=f"{RESULTS}/privacy/privacy_loss.parquet",
        long=f"{RESULTS}/privacy/privacy_long.parquet",
        worst_case=f"{RESULTS}/privacy/worst_case.csv",
    log:
        f"{LOGS}/privacy/privacy_loss.log",
    benchmark:
        f"{BENCHMARKS}/privacy/privacy_loss.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
        digest=config_digest("privacy"),
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} privacy-loss --config {params.config_file} --runs {input.runs}"
        " --norms {input.norms} --out-dir {params.out_dir} > {log} 2>&1"


rule scores:
    """One row per training example, one column per score (privacy losses, later the proxies)."""
    input:
        tables=score_tables(),
    output:
        scores=f"{RESULTS}/scores.parquet",
    log:
        f"{LOGS}/scores.log",
    benchmark:
        f"{BENCHMARKS}/scores.tsv"
    params:
        cli=cli_command,
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} scores --tables {input.tables} --out {output.scores} > {log} 2>&1"


rule robustness:
    """Rank stability of P across accounting beta, Renyi order, checkpoint schedule, seeds, estimator."""
    input:
        runs=expand(f"{RESULTS}/train/seed{{seed}}", seed=SEEDS),
        norms=expand(f"{RESULTS}/privacy/seed{{seed}}/norms.npz", seed=SEEDS),
    output:
        table=f"{RESULTS}/privacy/robustness.csv",
    log:
        f"{LOGS}/privacy/robustness.log",
    benchmark:
        f"{BENCHMARKS}/privacy/robustness.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("privacy", "groups"),
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} robustness --config {params.config_file} --runs {input.runs} --norms {input.norms}"
        " --out {output.table} > {log} 2>&1"
