"""Bad configs are refused before any job runs: one line naming the file and key, nothing written.

Each case mutates the CI config (workflow/configs/test.yaml) and is checked twice: by the package's
validator (what every CLI job runs) and by a real `snakemake -n` (what the Snakefile runs before it
builds the DAG).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import snakemake_command

from perinstance.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "workflow/configs/test.yaml").read_text())
NAN, INF = float("nan"), float("inf")


def _set(path: str, value):
    """A mutation that sets one dotted key of the base config."""

    def mutate(config: dict) -> dict:
        node = config
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
        return config

    return mutate


def _both(*mutations):
    def mutate(config: dict) -> dict:
        for m in mutations:
            config = m(config)
        return config

    return mutate


def _without(key: str):
    def mutate(config: dict) -> dict:
        config.pop(key)
        return config

    return mutate


# id -> (mutation of the base config, or raw YAML text; text the one-line message must contain)
CASES = {
    "nan-privacy-beta": (_set("privacy.beta", NAN), "'privacy.beta': must be a finite number"),
    "nan-unlearning-lr": (_set("unlearning.lr", NAN), "'unlearning.lr'"),
    "nan-oracles-z": (_set("oracles.z", NAN), "'oracles.z'"),
    "nan-training-lr": (_set("training.lr", NAN), "'training.lr'"),
    "inf-training-momentum": (_set("training.momentum", INF), "'training.momentum'"),
    "inf-in-privacy-orders": (_set("privacy.orders", [2, INF]), "'privacy.orders[1]'"),
    "minus-inf-signal": (_set("dataset.synthetic.signal", -INF), "'dataset.synthetic.signal'"),
    "float-group-size": (_set("groups.size", 10.0), "'groups.size': 10.0 is not of type 'integer'"),
    "float-oracle-count": (_set("oracles.count", 3.0), "'oracles.count'"),
    "float-seed": (_set("seeds", [0, 1.0]), "'seeds.1'"),
    "float-k-max": (_set("unlearning.k_max", 40.0), "'unlearning.k_max'"),
    "bool-epochs": (_set("training.epochs", True), "'training.epochs'"),
    "string-lr": (_set("training.lr", "0.05"), "'training.lr'"),
    "k-max-below-consecutive-evaluations": (_set("unlearning.k_max", 4), "'unlearning.k_max'"),
    "barrier-steps-beyond-k-max": (_set("barrier.unlearning_steps", 41), "'barrier.unlearning_steps'"),
    "gap-budget-not-an-evaluation": (_set("unlearning.gap_budgets", [22]), "'unlearning.gap_budgets'"),
    "ranking-seed-not-trained": (_set("groups.ranking_seed", 7), "'groups.ranking_seed'"),
    "barrier-method-not-run": (
        _both(
            _set("unlearning.methods", ["finetune", "sgld"]), _set("barrier.methods", ["sgld", "l1sparse"])
        ),
        "'barrier.methods'",
    ),
    "duplicate-section": (
        "experiment: test\nprivacy: {beta: 200}\nprivacy: {alpha: 4}\n",
        "line 3: duplicate key 'privacy'",
    ),
    "duplicate-nested-key": ("experiment: test\ntraining:\n  lr: 0.1\n  lr: 0.2\n", "duplicate key 'lr'"),
    "experiment-with-newline": (_set("experiment", "test\n"), "'experiment'"),
    "experiment-with-slash": (_set("experiment", "../other"), "'experiment'"),
    "experiment-missing": (_without("experiment"), "'experiment' is a required property"),
    "early-epoch-after-training": (
        _set("training.dynamics.early_epoch", 9),
        "'training.dynamics.early_epoch'",
    ),
    "multistep-without-milestones": (_set("training.lr_schedule", "multistep"), "'training.lr_milestones'"),
    "milestone-after-training": (
        _both(_set("training.lr_schedule", "multistep"), _set("training.lr_milestones", [5])),
        "'training.lr_milestones'",
    ),
    "warmup-covers-training": (_set("training.lr_warmup_epochs", 3), "'training.lr_warmup_epochs'"),
    "groups-larger-than-dataset": (_set("groups.size", 100), "'groups.size'"),
    "rank-bins-beyond-dataset": (_set("groups.linear_bins", 20), "'groups.linear_bins'"),
    "poisson-batch-larger-than-retain-set": (
        _both(_set("training.sampling", "poisson"), _set("training.batch_size", 500)),
        "'training.batch_size'",
    ),
    "spawn-at-last-epoch": (_set("barrier.spawn_epoch", 3), "'barrier.spawn_epoch'"),
    "spawn-without-checkpoint": (
        _both(_set("training.checkpoints.every_epochs", 2), _set("barrier.spawn_epoch", 1)),
        "'barrier.spawn_epoch'",
    ),
    "holdout-proxy-without-models": (
        _both(_set("groups.proxy_scores", ["cscore_holdout"]), _set("proxies.holdout_models", 0)),
        "'groups.proxy_scores'",
    ),
    "published-proxy-without-file": (
        _set("groups.proxy_scores", ["cscore_published"]),
        "'groups.proxy_scores'",
    ),
    "published-cscores-on-synthetic": (
        _set("proxies.published_cscores", "resources/c.npz"),
        "'proxies.published_cscores'",
    ),
    "unknown-dataset": (_set("dataset.name", "cifar100"), "'dataset.name'"),
    "unknown-model": (_set("model.name", "vgg"), "'model.name'"),
    "unknown-method": (_set("unlearning.methods", ["neggrad"]), "'unlearning.methods.0'"),
    "unknown-top-level-key": (_set("trainig", {}), "unknown config key trainig"),
    "unknown-nested-key": (_set("training.checkpoints.every", 2), "training.checkpoints.every"),
    "n-train-beyond-dataset": (_set("dataset.n_train", 1000), "'dataset.n_train'"),
    "test-fraction-empties-split": (_set("dataset.test_fraction", 0.001), "'dataset.test_fraction'"),
    "too-few-synthetic-examples": (_set("dataset.synthetic.n", 2), "'dataset.synthetic.n'"),
    "no-seeds": (_set("seeds", []), "'seeds'"),
    "repeated-seed": (_set("seeds", [0, 0]), "'seeds'"),
    "alpha-one": (_set("privacy.alpha", 1), "'privacy.alpha'"),
    "unknown-device": (_set("device", "tpu"), "'device'"),
    "ci-above-one": (_set("proxies.ci", 1.5), "'proxies.ci'"),
    "zero-threads": (_set("threads", 0), "'threads'"),
    "unknown-sampling": (_set("training.sampling", "random"), "'training.sampling'"),
    "not-a-mapping": ("- experiment\n- test\n", "must hold a mapping"),
    "yaml-syntax-error": ("experiment: test\ntraining: {lr: 0.1\n", "line 3"),
    "section-not-a-mapping": (_set("training", [1, 2]), "'training'"),
}


# Snakemake parses a --configfile itself before the Snakefile runs; for a file that is not a YAML
# mapping its own two-line WorkflowError speaks first (still before the DAG, nothing written).
SNAKEMAKE_READS_FIRST = {"not-a-mapping", "yaml-syntax-error"}


def _write_case(directory: Path, case) -> Path:
    mutation, _ = case
    path = directory / "bad.yaml"
    if isinstance(mutation, str):
        path.write_text(mutation)
    else:
        path.write_text(yaml.safe_dump(mutation(copy.deepcopy(BASE)), sort_keys=False))
    return path


def _tree(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime for p in directory.rglob("*")}


def test_suite_is_large_enough():
    assert len(CASES) >= 40


def test_base_config_is_valid():
    assert load_config(REPO / "workflow/configs/test.yaml")["experiment"] == "test"


@pytest.mark.parametrize("name", sorted(CASES))
def test_validator_names_the_key_in_one_line(tmp_path, name):
    path = _write_case(tmp_path, CASES[name])
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert CASES[name][1] in message and "\n" not in message.strip()
    assert str(path) in message


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_snakemake_refuses_before_the_dag(tmp_path, name):
    path = _write_case(tmp_path, CASES[name])
    before = _tree(tmp_path)
    command, env = snakemake_command("-n", "--configfile", str(path), cwd=tmp_path)
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0 and "Traceback" not in output
    if name not in SNAKEMAKE_READS_FIRST:
        assert len(output.splitlines()) == 1, output
        assert CASES[name][1] in output and str(path) in output
    assert _tree(tmp_path) == before  # nothing written, not even Snakemake's .snakemake/
