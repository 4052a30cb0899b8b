rule holdout:
    """C-score holdout models (one or all per job): each trained on a random fraction of D, predicts all of D."""
    output:
        holdout=[PATHS.holdout(m) for m in rule_models("holdout")],
    log:
        job_log("holdout"),
    benchmark:
        job_benchmark("holdout")
    conda:
        TORCH_ENV
    threads: job_threads("holdout")
    resources:
        **compute_resources(runtime=60),
    params:
        **job_params("dataset", "model", "training", "device", "proxies"),
        **models_param("holdout"),
    shell:
        job_shell("holdout")


rule proxies:
    """EL2N, forgetting events, learning speed and C-scores of every training example."""
    input:
        training_runs=training_runs(),
        holdout=holdout_files(),
        published=published_cscores(),
    output:
        proxies=PATHS.proxies,
    log:
        job_log("proxies"),
    benchmark:
        job_benchmark("proxies")
    conda:
        TORCH_ENV
    threads: job_threads("proxies")
    resources:
        **compute_resources(runtime=30),
    params:
        **job_params("proxies"),
    shell:
        job_shell("proxies")


rule correlations:
    """Spearman and Kendall of privacy loss with each proxy; CIs resample seeds (for P) and examples."""
    input:
        scores=PATHS.scores,
    output:
        correlations=PATHS.correlations,
    log:
        job_log("correlations"),
    benchmark:
        job_benchmark("correlations")
    conda:
        TORCH_ENV
    threads: job_threads("correlations")
    resources:
        **table_resources(runtime=20),
    params:
        **job_params("proxies", "groups"),
    shell:
        job_shell("correlations")
