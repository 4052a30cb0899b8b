rule figure:
    """F0-F5, F7-F9: one figure, drawn by its job from the tables it reads."""
    input:
        unpack(lambda wildcards: FIGURES[wildcards.figure].inputs),
    output:
        png=report(PATHS.figure("{figure}")["png"], caption="../report/figures.rst", category="Figures"),
        pdf=PATHS.figure("{figure}")["pdf"],
        csv=PATHS.figure("{figure}")["csv"],
    log:
        PATHS.log("figure", ("figure",)),
    benchmark:
        PATHS.benchmark("figure", ("figure",))
    wildcard_constraints:
        figure="|".join(FIGURES),
    conda:
        TORCH_ENV
    resources:
        **table_resources(),
    params:
        **job_params(),  # figures are cheap: any config change redraws them
        command=figure_command,
    shell:
        "{params.cli} {params.command} > {log:q} 2>&1"


rule figure_barriers:
    """F6: loss barriers per privacy-loss group and barrier height vs privacy loss."""
    input:
        barrier_paths=all_barrier_paths(),
        scores=PATHS.scores,
    output:
        png=report(
            PATHS.figure("F6_loss_barriers")["png"],
            caption="../report/F6_loss_barriers.rst",
            category="Figures",
        ),
        pdf=PATHS.figure("F6_loss_barriers")["pdf"],
        csv=PATHS.figure("F6_loss_barriers")["csv"],
        barrier_examples=PATHS.barrier_examples,
    log:
        job_log("figure_barriers"),
    benchmark:
        job_benchmark("figure_barriers")
    conda:
        TORCH_ENV
    threads: job_threads("figure_barriers")
    resources:
        **table_resources(),
    params:
        **job_params(),
    shell:
        job_shell("figure_barriers")


rule claims:
    """The paper's claims against what this experiment measured, with CIs and verdicts (results.md)."""
    input:
        difficulty_correlations=PATHS.difficulty_correlations,
        theory_fits=PATHS.theory_fits,
        barriers=PATHS.figure("F6_loss_barriers")["csv"],
    output:
        **PATHS.claims,
    log:
        job_log("claims"),
    benchmark:
        job_benchmark("claims")
    conda:
        TORCH_ENV
    threads: job_threads("claims")
    resources:
        **table_resources(),
    params:
        **job_params(),
    shell:
        job_shell("claims")
