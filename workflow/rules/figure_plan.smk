class Figure(NamedTuple):
    job: str  # the job in perinstance.jobs that draws it
    inputs: dict
    params: dict = {}


def privacy_figure(methods, label):
    inputs = {
        "steps": PATHS.steps,
        "unlearning_examples": PATHS.unlearning_examples,
        "survival": PATHS.survival,
        "curves": PATHS.curves,
    }
    return Figure("figure_steps", inputs, {"kind": "privacy-groups", "methods": methods, "label": label})


# The figures drawn by the one `figure` rule (F6 has a rule of its own, which also writes the
# per-example barrier table).
FIGURES = {
    "F0_training": Figure("figure_training", {"training_runs": training_runs()}),
    "F1_privacy_loss": Figure("figure_privacy", {"scores": PATHS.scores, "worst_case": PATHS.worst_case}),
    "F2_steps_sgld": privacy_figure(["sgld"], "F2: SGLD unlearning vs privacy loss"),
    "F3_steps_finetune": privacy_figure(
        ["finetune", "l1sparse"], "F3: fine-tuning unlearning vs privacy loss"
    ),
    "F4_proxy_correlation": Figure(
        "figure_proxies", {"scores": PATHS.scores, "correlations": PATHS.correlations}
    ),
    "F5_hard_groups": Figure(
        "figure_steps", privacy_figure([], "").inputs, {"kind": "hard-groups", "methods": [], "label": "F5"}
    ),
    "F7_robustness": Figure("figure_robustness", {"robustness": PATHS.robustness}),
    "F8_difficulty": Figure("figure_difficulty", {"difficulty_correlations": PATHS.difficulty_correlations}),
    "F9_methods": Figure(
        "figure_methods",
        {
            "unlearning_examples": PATHS.unlearning_examples,
            "difficulty_correlations": PATHS.difficulty_correlations,
            "steps": PATHS.steps,
        },
    ),
}


def figure_command(wildcards, input, output):
    """The figure's job command line (a derived param: the `digest` param reruns the rule)."""
    drawn = FIGURES[wildcards.figure]
    values = {
        "wildcards": {},
        "input": {name: getattr(input, name) for name in drawn.inputs},
        "output": {"png": output.png},
        "params": drawn.params,
    }
    return jobs.command_line(drawn.job, config_file=RUN_CONFIG, values=values)


def figure_names():
    """The figures this config draws: F2 needs SGLD, F3 fine-tuning or L1, F5 the proxy comparison."""
    methods = set(config["unlearning"]["methods"])
    names = [
        "F0_training",
        "F1_privacy_loss",
        "F4_proxy_correlation",
        "F6_loss_barriers",
        "F7_robustness",
        "F8_difficulty",
        "F9_methods",
    ]
    names += ["F2_steps_sgld"] if "sgld" in methods else []
    names += ["F3_steps_finetune"] if methods & {"finetune", "l1sparse"} else []
    if config["unlearning"]["proxy_methods"] and plan.comparison_groups(config):
        names.append("F5_hard_groups")
    return sorted(names)


def figure_sources():
    """Every input of the drawn figures and of the claims table. Targeted too, because a fresh clone
    holds the committed figures but no results, and Snakemake never rebuilds the missing inputs of
    an output that exists."""
    files = set(map(str, rules.claims.input)) | set(all_barrier_paths()) | {PATHS.scores}
    for name in figure_names():
        for value in FIGURES[name].inputs.values() if name in FIGURES else []:
            files.update([value] if isinstance(value, str) else value)
    return sorted(files)
