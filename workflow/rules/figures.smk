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
