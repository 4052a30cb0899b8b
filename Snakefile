# Per-instance privacy for machine unlearning (Sepahvand et al., ICML 2025).
# Run:  snakemake --profile workflow/profiles/default        (default experiment, config.yaml)
#       snakemake --profile workflow/profiles/default --configfile workflow/configs/test.yaml
#       snakemake --profile workflow/profiles/slurm --configfile workflow/configs/paper-cifar10.yaml
# The package under src/ holds the science; the rules only wire files and resources: every job is
# declared in src/perinstance/jobs.py and every result file named in src/perinstance/paths.py.
# There is no `configfile:` directive on purpose: a --configfile is read on its own, never merged
# over config.yaml (workflow/rules/common.smk, experiment_config).
from snakemake.utils import min_version

# the oldest release tested (dry runs of every config and profile, and the tiny workflow);
# profiles/<name>/profile.yaml is read since 9.19
min_version("9.21.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/figure_plan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/privacy.smk"
include: "workflow/rules/proxies.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/budget.smk"
include: "workflow/rules/barrier.smk"
include: "workflow/rules/figures.smk"


# On a cluster these run inside the Snakemake process instead of as sbatch jobs: seconds of work on
# small tables (figures, claims, groups, scores, proxy correlations, steps, budgets). The tables
# that read every checkpoint's norms or every unlearning run's per-example records (privacy_loss,
# robustness, proxies, difficulty) stay cluster jobs: minutes and gigabytes at paper scale.
localrules:
    all,
    figure,
    figure_barriers,
    claims,
    groups,
    scores,
    correlations,
    steps,
    budget,


rule all:
    default_target: True
    input:
        [PATHS.figure(name)["png"] for name in figure_names()],
        PATHS.claims["markdown"],
        figure_sources(),
        PATHS.budget_validation_summary,


# Written here, once per real run after the lock is taken (see RUN_CONFIG in common.smk).
onstart:
    if not os.path.exists(RUN_CONFIG):
        os.makedirs(os.path.dirname(RUN_CONFIG), exist_ok=True)
        tmp = f"{RUN_CONFIG}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            yaml.safe_dump(dict(config), fh, sort_keys=True)
        os.replace(tmp, RUN_CONFIG)
