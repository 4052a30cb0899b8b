rule groups:
    """Forget groups by privacy loss (low/mid/high, top rank bins), by each proxy (high), random."""
    input:
        scores=PATHS.scores,
    output:
        groups=PATHS.groups,
    log:
        job_log("groups"),
    benchmark:
        job_benchmark("groups")
    conda:
        TORCH_ENV
    threads: job_threads("groups")
    resources:
        **table_resources(),
    params:
        **job_params("groups"),
    shell:
        job_shell("groups")


rule oracle:
    """Oracle replicates of a forget group (one or all per job): retrained from scratch on D minus the group."""
    input:
        groups=PATHS.groups,
    output:
        oracle_evaluation=[PATHS.oracle_evaluation("{score}", "{group}", r) for r in rule_models("oracle")],
        oracle_model=model_weights(
            [PATHS.oracle_model("{score}", "{group}", r) for r in rule_models("oracle")]
        ),
    log:
        job_log("oracle"),
    benchmark:
        job_benchmark("oracle")
    conda:
        TORCH_ENV
    threads: job_threads("oracle")
    resources:
        **compute_resources(runtime=60),
    params:
        **job_params("dataset", "model", "training", "device"),
        **models_param("oracle"),
    shell:
        job_shell("oracle")


rule unlearn:
    """Unlearning runs of (method, group) (one or all per job), each from its original model on the retain set."""
    input:
        groups=PATHS.groups,
        originals=unlearning_originals,
        oracles=group_oracles,
    output:
        # barrier_model: the loss-barrier endpoint, the model after exactly barrier.unlearning_steps
        # steps, the same number of steps for every group
        **unlearning_outputs(),
    log:
        job_log("unlearn"),
    benchmark:
        job_benchmark("unlearn")
    conda:
        TORCH_ENV
    threads: job_threads("unlearn")
    resources:
        **compute_resources(runtime=60),
    params:
        **job_params("unlearning", "oracles"),
        **models_param("unlearn"),
        barrier_steps=config["barrier"]["unlearning_steps"],  # reruns the runs when the endpoint moves
    shell:
        job_shell("unlearn")


rule steps:
    """Steps-to-unlearn per run (censoring kept) and per group, with attack metrics."""
    input:
        run_curves=unlearning_files("curve"),
        run_finals=unlearning_files("final"),
        oracles=all_oracles(),
        scores=PATHS.scores,
        groups=PATHS.groups,
    output:
        steps=PATHS.steps,
        steps_summary=PATHS.steps_summary,
        curves=PATHS.curves,
        theory_fits=PATHS.theory_fits,
    log:
        job_log("steps"),
    benchmark:
        job_benchmark("steps")
    conda:
        TORCH_ENV
    threads: job_threads("steps")
    resources:
        **table_resources(),
    params:
        **job_params("oracles", "unlearning"),
    shell:
        job_shell("steps")


rule difficulty:
    """Per-example unlearning difficulty (uncensored gap statistics, first passage) and claims 3-4 as correlations."""
    input:
        run_examples=unlearning_files("examples"),
        oracles=all_oracles(),
        scores=PATHS.scores,
        groups=PATHS.groups,
    output:
        unlearning_examples=PATHS.unlearning_examples,
        difficulty_correlations=PATHS.difficulty_correlations,
        survival=PATHS.survival,
    log:
        job_log("difficulty"),
    benchmark:
        job_benchmark("difficulty")
    conda:
        TORCH_ENV
    threads: job_threads("difficulty")
    resources:
        **compute_resources(runtime=10),
    params:
        **job_params("oracles", "unlearning", "proxies", "groups"),
    shell:
        job_shell("difficulty")
