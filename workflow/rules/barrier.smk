rule spawned_oracle:
    """Oracle spawned from the original's early checkpoint and trained on D minus the group."""
    input:
        groups=f"{RESULTS}/groups.csv",
        original=train_run_dir(plan.original_seed(config, 0)),
    output:
        model=f"{RESULTS}/barriers/spawned/{{score}}/{{group}}.pt",
    log:
        f"{LOGS}/barriers/spawned_{{score}}_{{group}}.log",
    benchmark:
        f"{BENCHMARKS}/barriers/spawned_{{score}}_{{group}}.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("training", "barrier"),
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} spawned-oracle --config {params.config_file} --groups {input.groups} --score {wildcards.score}"
        " --group {wildcards.group} --original {input.original} --out {output.model}"
        " --threads {threads} > {log} 2>&1"


rule barrier:
    """Per-example loss along original -> unlearned (after barrier.unlearning_steps) and -> spawned-oracle paths."""
    input:
        groups=f"{RESULTS}/groups.csv",
        original=f"{train_run_dir(plan.original_seed(config, 0))}",
        unlearned=lambda wildcards: list(barrier_endpoints(wildcards).values()),
        spawned=f"{RESULTS}/barriers/spawned/{{score}}/{{group}}.pt",
    output:
        paths=f"{RESULTS}/barriers/{{score}}/{{group}}.parquet",
    log:
        f"{LOGS}/barriers/{{score}}_{{group}}.log",
    benchmark:
        f"{BENCHMARKS}/barriers/{{score}}_{{group}}.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        endpoints=lambda wildcards, input: " ".join(
            [f"unlearned_{m}={p}" for m, p in barrier_endpoints(wildcards).items()]
            + [f"spawned_oracle={input.spawned}"]
        ),
        digest=config_digest("barrier"),
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} barrier --config {params.config_file} --groups {input.groups} --score {wildcards.score}"
        " --group {wildcards.group} --original {input.original}/model.pt --endpoint {params.endpoints}"
        " --out {output.paths} --threads {threads} > {log} 2>&1"
