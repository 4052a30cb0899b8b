rule spawned_oracle:
    """Oracle spawned from the original's early checkpoint and trained on D minus the group."""
    input:
        groups=PATHS.groups,
        original=PATHS.training_run(plan.original_seed(config, 0)),
    output:
        spawned_oracle=model_weights(PATHS.spawned_oracle("{score}", "{group}")),
    log:
        job_log("spawned_oracle"),
    benchmark:
        job_benchmark("spawned_oracle")
    conda:
        TORCH_ENV
    threads: job_threads("spawned_oracle")
    resources:
        **compute_resources(runtime=60),
    params:
        **job_params("training", "barrier"),
    shell:
        job_shell("spawned_oracle")


rule barrier:
    """Per-example loss along original -> unlearned (after barrier.unlearning_steps) and -> spawned-oracle paths."""
    input:
        groups=PATHS.groups,
        original=PATHS.training_run(plan.original_seed(config, 0)),
        unlearned=barrier_endpoints,
        spawned=PATHS.spawned_oracle("{score}", "{group}"),
    output:
        barrier_paths=PATHS.barrier_paths("{score}", "{group}"),
    log:
        job_log("barrier"),
    benchmark:
        job_benchmark("barrier")
    conda:
        TORCH_ENV
    threads: job_threads("barrier")
    resources:
        **compute_resources(runtime=30),
    params:
        **job_params("barrier"),
        methods=barrier_methods,
    shell:
        job_shell("barrier")
