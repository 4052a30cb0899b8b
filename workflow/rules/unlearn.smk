rule groups:
    """Forget groups by privacy loss (low/mid/high, top rank bins), by each proxy (high), random."""
    input:
        scores=f"{RESULTS}/scores.parquet",
    output:
        groups=f"{RESULTS}/groups.csv",
    log:
        f"{LOGS}/groups.log",
    benchmark:
        f"{BENCHMARKS}/groups.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("groups"),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} groups --config {params.config_file} --scores {input.scores} --out {output.groups} > {log} 2>&1"


rule oracle:
    """Oracle r of a forget group: retrained from scratch on D minus the group."""
    input:
        groups=f"{RESULTS}/groups.csv",
    output:
        evaluation=f"{RESULTS}/oracles/{{score}}/{{group}}/seed{{oracle}}.npz",
        model=f"{RESULTS}/oracles/{{score}}/{{group}}/seed{{oracle}}.pt",
    log:
        f"{LOGS}/oracles/{{score}}/{{group}}/seed{{oracle}}.log",
    benchmark:
        f"{BENCHMARKS}/oracles/{{score}}/{{group}}/seed{{oracle}}.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("dataset", "model", "training", "device"),
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} oracle --config {params.config_file} --groups {input.groups} --score {wildcards.score}"
        " --group {wildcards.group} --oracle {wildcards.oracle} --model-out {output.model}"
        " --out {output.evaluation} --threads {threads} > {log} 2>&1"


rule unlearn:
    """One unlearning run (method, group, seed) from the original model on the retain set."""
    input:
        groups=f"{RESULTS}/groups.csv",
        original=original_run,
        oracles=oracle_evaluations,
    output:
        curve=f"{RESULTS}/unlearn/{{method}}/{{score}}/{{group}}/seed{{useed}}.csv",
        examples=f"{RESULTS}/unlearn/{{method}}/{{score}}/{{group}}/seed{{useed}}_forget.parquet",
        final=f"{RESULTS}/unlearn/{{method}}/{{score}}/{{group}}/seed{{useed}}_final.npz",
        model=f"{RESULTS}/unlearn/{{method}}/{{score}}/{{group}}/seed{{useed}}.pt",
        # loss-barrier endpoint: the model after exactly barrier.unlearning_steps steps (written by the
        # run beside --model-out), the same number of steps for every group
        barrier_model=f"{RESULTS}/unlearn/{{method}}/{{score}}/{{group}}/seed{{useed}}_barrier.pt",
    log:
        f"{LOGS}/unlearn/{{method}}/{{score}}/{{group}}/seed{{useed}}.log",
    benchmark:
        f"{BENCHMARKS}/unlearn/{{method}}/{{score}}/{{group}}/seed{{useed}}.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("unlearning", "oracles"),
        barrier_steps=config["barrier"]["unlearning_steps"],  # reruns the runs when the endpoint moves
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} unlearn --config {params.config_file} --groups {input.groups} --method {wildcards.method}"
        " --score {wildcards.score} --group {wildcards.group} --seed {wildcards.useed}"
        " --original {input.original} --oracles {input.oracles} --curve {output.curve}"
        " --examples {output.examples} --final {output.final} --model-out {output.model}"
        " --threads {threads} > {log} 2>&1"


rule steps:
    """Steps-to-unlearn per run (censoring kept) and per group, with attack metrics."""
    input:
        curves=[unlearn_output(job, "curve") for job in UNLEARNING_JOBS],
        finals=[unlearn_output(job, "final") for job in UNLEARNING_JOBS],
        oracles=all_oracle_evaluations(),
        scores=f"{RESULTS}/scores.parquet",
        groups=f"{RESULTS}/groups.csv",
    output:
        steps=f"{RESULTS}/steps.csv",
        summary=f"{RESULTS}/steps_summary.csv",
        curves=f"{RESULTS}/curves.parquet",
        fits=f"{RESULTS}/theory_fits.csv",
    log:
        f"{LOGS}/steps.log",
    benchmark:
        f"{BENCHMARKS}/steps.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("oracles", "unlearning"),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} steps --config {params.config_file} --curves {input.curves} --finals {input.finals}"
        " --oracles {input.oracles} --scores {input.scores} --groups {input.groups}"
        " --out {output.steps} --summary {output.summary} --curves-out {output.curves}"
        " --fits-out {output.fits} > {log} 2>&1"


rule difficulty:
    """Per-example unlearning difficulty (uncensored gap statistics, first passage) and claims 3-4 as correlations."""
    input:
        examples=[unlearn_output(job, "examples") for job in UNLEARNING_JOBS],
        oracles=all_oracle_evaluations(),
        scores=f"{RESULTS}/scores.parquet",
        groups=f"{RESULTS}/groups.csv",
    output:
        examples=f"{RESULTS}/unlearning_examples.parquet",
        correlations=f"{RESULTS}/difficulty_correlations.csv",
        survival=f"{RESULTS}/survival.csv",
    log:
        f"{LOGS}/difficulty.log",
    benchmark:
        f"{BENCHMARKS}/difficulty.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest("oracles", "unlearning", "proxies", "groups"),
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on retry after an OOM kill
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "{params.cli} difficulty --config {params.config_file} --examples {input.examples} --oracles {input.oracles}"
        " --scores {input.scores} --groups {input.groups} --out {output.examples}"
        " --correlations-out {output.correlations} --survival-out {output.survival} > {log} 2>&1"
