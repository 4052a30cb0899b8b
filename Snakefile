# Per-instance privacy for machine unlearning (Sepahvand et al., ICML 2025).
# Run:  snakemake --cores 2                      (default experiment, config.yaml)
#       snakemake --cores 2 --configfile workflow/configs/test.yaml
# The package under src/ holds the science; the rules only wire files and resources.
# There is no `configfile:` directive on purpose: a --configfile is read on its own, never merged
# over config.yaml (workflow/rules/common.smk, experiment_config).


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/privacy.smk"
include: "workflow/rules/proxies.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/barrier.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        figure_targets(),
        f"{FIGURES}/results.md",
        # The figures' inputs as targets too: a fresh clone holds the committed figures but no
        # results, and Snakemake never rebuilds the missing inputs of an output that exists.
        figure_sources(),
    default_target: True
