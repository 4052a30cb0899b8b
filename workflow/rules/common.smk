import hashlib
import os
import sys

import yaml
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

# the plan module is standard-library only: the DAG and the package agree on every group name
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from perinstance import plan  # noqa: E402

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


def resolved_config_path():
    """The validated config (defaults filled) that every CLI call reads.

    Written at parse time, and only when its content changes. The science rules declare the
    config sections they depend on as params (a digest), so a change reruns only what it
    affects. The cheap figure rules take this file as an input: a checkout that holds the
    committed figures but no results yet (a fresh clone) writes it anew, which makes the figures
    out of date, so Snakemake runs the experiment instead of declaring them complete.
    """
    path = f"{RESULTS}/config.resolved.yaml"
    text = yaml.safe_dump(dict(config), sort_keys=True)
    if not os.path.exists(path) or open(path).read() != text:
        os.makedirs(RESULTS, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return path


CONFIG_FILE = resolved_config_path()


def config_digest(*sections):
    """Short hash of config sections: a params value that reruns a rule when they change."""
    text = yaml.safe_dump({s: config[s] for s in sections}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    return {"curve": f"{stem}.csv", "final": f"{stem}_final.npz"}[kind]


BARRIER_METHODS = [m for m in config["barrier"]["methods"] if m in config["unlearning"]["methods"]]


def barrier_unlearned_models(wildcards):
    stem = f"{RESULTS}/unlearn/{{method}}/{wildcards.score}/{wildcards.group}/seed0.pt"
    return [stem.format(method=m) for m in BARRIER_METHODS]


def figure_targets():
    names = ["F0_training", "F1_privacy_loss", "F4_proxy_correlation", "F6_loss_barriers", "F7_robustness"]
    methods = set(config["unlearning"]["methods"])
    if "sgld" in methods:
        names.append("F2_steps_sgld")
    if methods & {"finetune", "l1sparse"}:
        names.append("F3_steps_finetune")
    if config["unlearning"]["proxy_methods"] and plan.comparison_groups(config):
        names.append("F5_hard_groups")
    return [f"{FIGURES}/{name}.png" for name in names]
