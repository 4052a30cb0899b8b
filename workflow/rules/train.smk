rule train:
    """Train one original model; checkpoints and training dynamics land in its run directory."""
    output:
        run=directory(f"{RESULTS}/train/seed{{seed}}"),
    log:
        f"{LOGS}/train/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/seed{{seed}}.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("dataset", "model", "training", "device"),
        # the run keeps its optimizer state at this epoch for the spawned oracles
        spawn_epoch=config["barrier"]["spawn_epoch"],
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} train --config {params.config_file} --seed {wildcards.seed}"
        " --threads {threads} --out {output.run} > {log} 2>&1"
