import hashlib
import os
import sys

import yaml


# The package's config and plan modules need only the standard library, jsonschema and PyYAML:
# the DAG and the jobs validate with one validator and agree on every group and job name.
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from perinstance import plan  # noqa: E402
from perinstance.config import ConfigError, merge_configs, read_config_file, validate_config  # noqa: E402


def experiment_config():
    """This invocation's config: its --configfile files (else ./config.yaml), then --config, validated.

    Each file is read strictly (duplicate keys refused) and stands on its own: nothing is merged in
    from config.yaml, so omitted keys take the schema's defaults. A bad value stops here, before the
    DAG is built, with one line naming the file and the key.
    """
    files = [str(f) for f in workflow.overwrite_configfiles] or ["config.yaml"]
    try:
        raw = {}
        for path in files:
            raw = merge_configs(raw, read_config_file(path))
        return validate_config(merge_configs(raw, dict(workflow.config_settings.overwrite_config or {})))
    except ConfigError as err:
        message = str(err)
        sys.exit(message if message.startswith("config file") else f"config file {', '.join(files)}: {message}")


config.clear()
config.update(experiment_config())

EXPERIMENT = config["experiment"]
RESULTS = f"results/{EXPERIMENT}"
FIGURES = f"figures/{EXPERIMENT}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
SEEDS = config["seeds"]
# Rules call the package through its CLI; src/ on PYTHONPATH makes that work in conda envs
# (where the package is not installed) exactly as in an installed virtualenv.
CLI = f"PYTHONPATH={workflow.basedir}/src${{PYTHONPATH:+:$PYTHONPATH}} python -m perinstance"


wildcard_constraints:
    seed=r"\d+",
    model_id=r"\d+",
    oracle=r"\d+",
    useed=r"\d+",
    method="|".join(["finetune", "sgld", "l1sparse"]),
    score=r"[a-z_0-9]+",
    group=r"[a-z0-9]+",


def config_digest(*sections):
    """Short hash of config sections (all of them when none are named): a params value that reruns
    a rule when they change."""
    chosen = {s: config[s] for s in sections} if sections else dict(config)
    text = yaml.safe_dump(chosen, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Every job reads the config of the invocation that started it: a file named by the digest of its
# content, so it never changes once written and another invocation (refused by the lock, a dry run,
# a different config) cannot alter what a running workflow reads. It is written in `onstart`, which
# Snakemake calls only for a real run after taking the lock; dry runs, --lint, --unlock and --report
# write nothing.
RUN_CONFIG = f"{RESULTS}/configs/{config_digest()}.yaml"


def cli_command(wildcards, input):
    """The params value `cli`: how a job calls the package. It holds the checkout's absolute path;
    as a derived param (see run_config) it does not rerun every job when the checkout moves."""
    return CLI


def run_config(wildcards, input):
    """The params value `config_file` of every rule that reads the config.

    Its path changes with any config change. Taking `input` makes it a derived param, which
    Snakemake leaves out of the params rerun trigger; the rule's `digest` param is what reruns it,
    for the sections it reads only.
    """
    return RUN_CONFIG


onstart:
    if not os.path.exists(RUN_CONFIG):
        os.makedirs(os.path.dirname(RUN_CONFIG), exist_ok=True)
        tmp = f"{RUN_CONFIG}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            yaml.safe_dump(dict(config), fh, sort_keys=True)
        os.replace(tmp, RUN_CONFIG)


def train_run_dir(seed):
    return f"{RESULTS}/train/seed{seed}"


def score_tables():
    """Per-example tables merged into scores.parquet (each capability adds its own)."""
    return [f"{RESULTS}/privacy/privacy_loss.parquet", f"{RESULTS}/proxies/proxies.parquet"]


def holdout_files():
    count = config["proxies"]["holdout_models"]
    return [f"{RESULTS}/proxies/holdout/model{m}.npz" for m in range(count)]


def published_cscores():
    """The user-provided C-score file as an input, so a missing file fails before any job runs."""
    path = config["proxies"]["published_cscores"]
    return [path] if path else []


GROUPS = plan.all_groups(config)
UNLEARNING_JOBS = plan.unlearning_jobs(config)
ORACLES = range(config["oracles"]["count"])


def oracle_evaluations(wildcards):
    return [f"{RESULTS}/oracles/{wildcards.score}/{wildcards.group}/seed{r}.npz" for r in ORACLES]


def all_oracle_evaluations():
    return [f"{RESULTS}/oracles/{g.score}/{g.group}/seed{r}.npz" for g in GROUPS for r in ORACLES]


def original_run(wildcards):
    return train_run_dir(plan.original_seed(config, int(wildcards.useed)))


def unlearn_output(job, kind):
    stem = f"{RESULTS}/unlearn/{job.method}/{job.score}/{job.group}/seed{job.seed}"
    return {"curve": f"{stem}.csv", "final": f"{stem}_final.npz", "examples": f"{stem}_forget.parquet"}[kind]


def barrier_endpoints(wildcards):
    """method -> unlearned endpoint of one barrier group: run 0's model after barrier.unlearning_steps
    steps (the same for every group), for the methods plan.barrier_methods gives that group."""
    group = plan.Group(wildcards.score, wildcards.group)
    stem = f"{RESULTS}/unlearn/{{method}}/{wildcards.score}/{wildcards.group}/seed0_barrier.pt"
    return {m: stem.format(method=m) for m in plan.barrier_methods(config, group)}


def barrier_paths():
    """Barrier path tables of every barrier group: the privacy-loss groups and the random groups."""
    return [f"{RESULTS}/barriers/{g.score}/{g.group}.parquet" for g in plan.barrier_groups(config)]


def figure_targets():
    names = ["F0_training", "F1_privacy_loss", "F4_proxy_correlation", "F6_loss_barriers", "F7_robustness"]
    methods = set(config["unlearning"]["methods"])
    if "sgld" in methods:
        names.append("F2_steps_sgld")
    if methods & {"finetune", "l1sparse"}:
        names.append("F3_steps_finetune")
    if config["unlearning"]["proxy_methods"] and plan.comparison_groups(config):
        names.append("F5_hard_groups")
    names.append("F8_difficulty")
    return [f"{FIGURES}/{name}.png" for name in names]


FIGURE_RULES = {"F0_training": "figure_training", "F1_privacy_loss": "figure_privacy",
                "F4_proxy_correlation": "figure_proxies", "F6_loss_barriers": "figure_barriers",
                "F7_robustness": "figure_robustness", "F2_steps_sgld": "figure_steps",
                "F3_steps_finetune": "figure_steps", "F5_hard_groups": "figure_steps",
                "F8_difficulty": "figure_difficulty"}


def figure_sources():
    """Every input of the targeted figures' rules and of the claims table."""
    names = {FIGURE_RULES[os.path.basename(path)[: -len(".png")]] for path in figure_targets()} | {"claims"}
    return sorted({str(path) for name in names for path in getattr(rules, name).input})
