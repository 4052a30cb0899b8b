rule grad_norms:
    """Gradient norm of every training example at every checkpoint of one run (or the merge of its parts)."""
    input:
        training_run=PATHS.training_run("{seed}"),
        norm_parts=norm_parts,
    output:
        grad_norms=PATHS.grad_norms("{seed}"),
    log:
        job_log("grad_norms"),
    benchmark:
        job_benchmark("grad_norms")
    # a merge of parts takes seconds: on a cluster it runs in the Snakemake process
    localrule: SPLIT_NORMS
    conda:
        TORCH_ENV
    threads: job_threads("grad_norms")
    resources:
        **compute_resources(runtime=60),
    params:
        **job_params("dataset", "model", "device"),
    shell:
        job_shell("grad_norms")


rule grad_norms_part:
    """Gradient norms at every privacy.norm_jobs-th checkpoint of one run, from the part-th on."""
    input:
        training_run=PATHS.training_run("{seed}"),
    output:
        grad_norms_part=PATHS.grad_norms_part("{seed}", "{part}"),
    log:
        job_log("grad_norms_part"),
    benchmark:
        job_benchmark("grad_norms_part")
    conda:
        TORCH_ENV
    threads: job_threads("grad_norms_part")
    resources:
        **compute_resources(runtime=60),
    params:
        **job_params("dataset", "model", "device"),
        # which checkpoints a part takes; the rest of privacy (beta, orders, ...) does not touch norms
        norm_jobs=config["privacy"]["norm_jobs"],
    shell:
        job_shell("grad_norms_part")


rule privacy_loss:
    """Per-instance privacy losses P(x, alpha): checkpoint and online estimators, worst case."""
    input:
        training_runs=training_runs(),
        grad_norms=all_grad_norms(),
    output:
        privacy_table=PATHS.privacy_table,
        privacy_long=PATHS.privacy_long,
        worst_case=PATHS.worst_case,
    log:
        job_log("privacy_loss"),
    benchmark:
        job_benchmark("privacy_loss")
    conda:
        TORCH_ENV
    threads: job_threads("privacy_loss")
    resources:
        **compute_resources(runtime=30),
    params:
        **job_params("privacy"),
    shell:
        job_shell("privacy_loss")


rule scores:
    """One row per training example, one column per score (privacy losses, proxies)."""
    input:
        tables=[PATHS.privacy_table, PATHS.proxies],
    output:
        scores=PATHS.scores,
    log:
        job_log("scores"),
    benchmark:
        job_benchmark("scores")
    conda:
        TORCH_ENV
    threads: job_threads("scores")
    resources:
        **table_resources(),
    params:
        **job_params("experiment"),
    shell:
        job_shell("scores")


rule robustness:
    """Rank stability of P across accounting beta, Renyi order, checkpoint schedule, seeds, estimator."""
    input:
        training_runs=training_runs(),
        grad_norms=all_grad_norms(),
    output:
        robustness=PATHS.robustness,
    log:
        job_log("robustness"),
    benchmark:
        job_benchmark("robustness")
    conda:
        TORCH_ENV
    threads: job_threads("robustness")
    resources:
        **compute_resources(runtime=30),
    params:
        **job_params("privacy", "groups"),
    shell:
        job_shell("robustness")
