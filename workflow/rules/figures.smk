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
        config_file=CONFIG_FILE,
        cli=CLI,
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-training --config {params.config_file} --runs {input.runs}"
        " --out {output.png} > {log} 2>&1"


rule figure_privacy:
    """F1: distribution of per-instance privacy losses and the most / least private examples."""
    input:
        scores=f"{RESULTS}/scores.parquet",
    output:
        png=report(f"{FIGURES}/F1_privacy_loss.png", caption="../report/F1_privacy_loss.rst", category="Privacy"),
        pdf=f"{FIGURES}/F1_privacy_loss.pdf",
        csv=f"{FIGURES}/F1_privacy_loss.csv",
    log:
        f"{LOGS}/figures/F1_privacy_loss.log",
    benchmark:
        f"{BENCHMARKS}/figures/F1_privacy_loss.tsv"
    params:
        config_file=CONFIG_FILE,
        cli=CLI,
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-privacy --config {params.config_file} --scores {input.scores}"
        " --out {output.png} > {log} 2>&1"


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
        config_file=CONFIG_FILE,
        cli=CLI,
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    shell:
        "{params.cli} figure-proxies --config {params.config_file} --scores {input.scores}"
        " --correlations {input.correlations} --out {output.png} > {log} 2>&1"
