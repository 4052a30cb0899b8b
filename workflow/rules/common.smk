import hashlib
import os

import yaml
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

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


def resolved_config_path():
    """The validated config (defaults filled) that every CLI call reads.

    Written at parse time, and only when its content changes, so its timestamp does not
    trigger reruns; rules declare the config sections they depend on as params instead.
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
    return [f"{RESULTS}/privacy/privacy_loss.parquet"]


def figure_targets():
    return [f"{FIGURES}/F0_training.png", f"{FIGURES}/F1_privacy_loss.png"]
