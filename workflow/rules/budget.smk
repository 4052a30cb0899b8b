rule budget:
    """Predicted unlearning budgets from P(x, 4 alpha): calibration per method and its leave-one-group-out validation."""
    input:
        steps=PATHS.steps,
        groups=PATHS.groups,
    output:
        budget_calibration=PATHS.budget_calibration,
        budget_validation=PATHS.budget_validation,
        budget_validation_summary=PATHS.budget_validation_summary,
    log:
        job_log("budget"),
    benchmark:
        job_benchmark("budget")
    conda:
        TORCH_ENV
    threads: job_threads("budget")
    resources:
        **table_resources(),
    params:
        **job_params(),  # the calibration records the data, model, training and recipe it applies to
    shell:
        job_shell("budget")
