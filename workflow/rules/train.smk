rule train:
    """Train one original model; checkpoints and training dynamics land in its run directory."""
    output:
        training_run=directory(PATHS.training_run("{seed}")),
    log:
        job_log("train"),
    benchmark:
        job_benchmark("train")
    conda:
        TORCH_ENV
    threads: job_threads("train")
    resources:
        **compute_resources(runtime=60),
    params:
        **job_params("dataset", "model", "training", "device"),
        # the run keeps its optimizer state at this epoch for the spawned oracles
        spawn_epoch=config["barrier"]["spawn_epoch"],
    shell:
        job_shell("train")
