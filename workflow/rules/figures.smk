rule figure_training:
    """F0: training curves of the original models, one line per seed."""
    input:
        runs=expand(f"{RESULTS}/train/seed{{seed}}", seed=SEEDS),
    output:
        png=report(f"{FIGURES}/F0_training.png", caption="../report/F0_training.rst", category="Training"),
        pdf=f"{FIGURES}/F0_training.pdf",
        csv=f"{FIGURES}/F0_training.csv",
    log:
        f"{LOGS}/figures/F0_training.log",
    benchmark:
        f"{BENCHMARKS}/figures/F0_training.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # figures are cheap: any config change redraws them
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-training --config {params.config_file} --runs {input.runs}"
        " --out {output.png} > {log} 2>&1"


rule figure_privacy:
    """F1: per-instance privacy losses against the data-independent worst case; most / least private examples."""
    input:
        scores=f"{RESULTS}/scores.parquet",
        worst_case=f"{RESULTS}/privacy/worst_case.csv",
    output:
        png=report(f"{FIGURES}/F1_privacy_loss.png", caption="../report/F1_privacy_loss.rst", category="Privacy"),
        pdf=f"{FIGURES}/F1_privacy_loss.pdf",
        csv=f"{FIGURES}/F1_privacy_loss.csv",
    log:
        f"{LOGS}/figures/F1_privacy_loss.log",
    benchmark:
        f"{BENCHMARKS}/figures/F1_privacy_loss.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # figures are cheap: any config change redraws them
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-privacy --config {params.config_file} --scores {input.scores}"
        " --worst-case {input.worst_case} --out {output.png} > {log} 2>&1"


rule figure_proxies:
    """F4: correlation of privacy loss with the difficulty proxies."""
    input:
        scores=f"{RESULTS}/scores.parquet",
        correlations=f"{RESULTS}/proxies/correlations.csv",
    output:
        png=report(f"{FIGURES}/F4_proxy_correlation.png", caption="../report/F4_proxy_correlation.rst", category="Proxies"),
        pdf=f"{FIGURES}/F4_proxy_correlation.pdf",
        csv=f"{FIGURES}/F4_proxy_correlation.csv",
    log:
        f"{LOGS}/figures/F4_proxy_correlation.log",
    benchmark:
        f"{BENCHMARKS}/figures/F4_proxy_correlation.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # figures are cheap: any config change redraws them
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-proxies --config {params.config_file} --scores {input.scores}"
        " --correlations {input.correlations} --out {output.png} > {log} 2>&1"


STEP_FIGURES = {
    "F2_steps_sgld": {"kind": "privacy-groups", "methods": ["sgld"], "label": "F2: SGLD unlearning vs privacy loss"},
    "F3_steps_finetune": {"kind": "privacy-groups", "methods": ["finetune", "l1sparse"], "label": "F3: fine-tuning unlearning vs privacy loss"},
    "F5_hard_groups": {"kind": "hard-groups", "methods": [], "label": "F5"},
}


rule figure_steps:
    """F2 (SGLD), F3 (fine-tuning, L1-sparse): steps-to-unlearn per privacy-loss group; F5: hard groups."""
    input:
        steps=f"{RESULTS}/steps.csv",
        examples=f"{RESULTS}/unlearning_examples.parquet",
        survival=f"{RESULTS}/survival.csv",
        curves=f"{RESULTS}/curves.parquet",
    output:
        png=report(f"{FIGURES}/{{step_figure}}.png", caption="../report/steps_figures.rst", category="Unlearning"),
        pdf=f"{FIGURES}/{{step_figure}}.pdf",
        csv=f"{FIGURES}/{{step_figure}}.csv",
    log:
        f"{LOGS}/figures/{{step_figure}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/{{step_figure}}.tsv"
    wildcard_constraints:
        step_figure="|".join(STEP_FIGURES),
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # figures are cheap: any config change redraws them
        kind=lambda wildcards: STEP_FIGURES[wildcards.step_figure]["kind"],
        methods=lambda wildcards: " ".join(STEP_FIGURES[wildcards.step_figure]["methods"]),
        label=lambda wildcards: STEP_FIGURES[wildcards.step_figure]["label"],
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-steps --config {params.config_file} --kind {params.kind} --methods {params.methods}"
        " --figure {params.label:q} --steps {input.steps} --examples {input.examples} --survival {input.survival}"
        " --curves {input.curves}"
        " --out {output.png} > {log} 2>&1"


rule figure_robustness:
    """F7: robustness of the privacy-loss ranking."""
    input:
        table=f"{RESULTS}/privacy/robustness.csv",
    output:
        png=report(f"{FIGURES}/F7_robustness.png", caption="../report/F7_robustness.rst", category="Privacy"),
        pdf=f"{FIGURES}/F7_robustness.pdf",
        csv=f"{FIGURES}/F7_robustness.csv",
    log:
        f"{LOGS}/figures/F7_robustness.log",
    benchmark:
        f"{BENCHMARKS}/figures/F7_robustness.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # figures are cheap: any config change redraws them
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-robustness --config {params.config_file} --table {input.table} --out {output.png} > {log} 2>&1"


rule figure_barriers:
    """F6: loss barriers per privacy-loss group and barrier height vs privacy loss."""
    input:
        paths=barrier_paths(),
        scores=f"{RESULTS}/scores.parquet",
    output:
        png=report(f"{FIGURES}/F6_loss_barriers.png", caption="../report/F6_loss_barriers.rst", category="Barriers"),
        pdf=f"{FIGURES}/F6_loss_barriers.pdf",
        csv=f"{FIGURES}/F6_loss_barriers.csv",
        examples=f"{RESULTS}/barriers/barriers.csv",
    log:
        f"{LOGS}/figures/F6_loss_barriers.log",
    benchmark:
        f"{BENCHMARKS}/figures/F6_loss_barriers.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # figures are cheap: any config change redraws them
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-barriers --config {params.config_file} --paths {input.paths} --scores {input.scores}"
        " --examples-out {output.examples} --out {output.png} > {log} 2>&1"


rule figure_difficulty:
    """F8: claims 3 and 4 per example: rho(difficulty, P) and rho(difficulty, proxy), paired differences."""
    input:
        correlations=f"{RESULTS}/difficulty_correlations.csv",
    output:
        png=report(f"{FIGURES}/F8_difficulty.png", caption="../report/F8_difficulty.rst", category="Unlearning"),
        pdf=f"{FIGURES}/F8_difficulty.pdf",
        csv=f"{FIGURES}/F8_difficulty.csv",
    log:
        f"{LOGS}/figures/F8_difficulty.log",
    benchmark:
        f"{BENCHMARKS}/figures/F8_difficulty.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # figures are cheap: any config change redraws them
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-difficulty --config {params.config_file} --correlations {input.correlations}"
        " --out {output.png} > {log} 2>&1"


rule claims:
    """The paper's claims against what this experiment measured, with CIs and verdicts (results.md)."""
    input:
        correlations=f"{RESULTS}/difficulty_correlations.csv",
        fits=f"{RESULTS}/theory_fits.csv",
        barriers=f"{FIGURES}/F6_loss_barriers.csv",
    output:
        csv=f"{FIGURES}/results.csv",
        markdown=f"{FIGURES}/results.md",
    log:
        f"{LOGS}/figures/results.log",
    benchmark:
        f"{BENCHMARKS}/figures/results.tsv"
    params:
        config_file=run_config,
        cli=cli_command,
        digest=config_digest(),  # cheap: any config change rewrites it
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} claims --config {params.config_file} --correlations {input.correlations} --fits {input.fits}"
        " --barriers {input.barriers} --out {output.csv} > {log} 2>&1"
