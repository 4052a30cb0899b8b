"""The paper-structure smoke config (workflow/configs/paper-smoke.yaml) takes the paper configs'
code paths at a size CI can run: same model, augmentation, schedule, sampling, methods and job
layout as paper-cifar10, only smaller. tests/test_slurm.py runs it end to end, locally and
through the SLURM profile."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import snakemake_command

from perinstance.config import read_config_file, validate_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "workflow/configs/paper-smoke.yaml"
PAPER = REPO / "workflow/configs/paper-cifar10.yaml"

# (section, key): what decides which code runs; paper-cifar10 and the smoke config agree
# (paper-svhn differs from paper-cifar10 in its dataset and in training without augmentation)
SAME_CODE_PATH = [
    ("model", "name"),
    ("training", "optimizer"),
    ("training", "sampling"),
    ("training", "lr_schedule"),
    ("training", "augment"),
    ("training", "checkpoints"),
    ("training", "dynamics"),
    ("privacy", "include_step0"),
    ("privacy", "clip"),
    ("unlearning", "methods"),
    ("unlearning", "proxy_methods"),
    ("unlearning", "stop_when_unlearned"),
    ("barrier", "methods"),
    ("barrier", "variant"),
    (None, "models_per_job"),
    (None, "keep_models"),
    (None, "device"),
]


def _config(path: Path) -> dict:
    return validate_config(read_config_file(path))


def _value(config: dict, section: str | None, key: str):
    value = config[key] if section is None else config[section][key]
    if key == "checkpoints":  # the schedule's kind, not its spacing
        return {k: v is not None and v is not False for k, v in value.items()}
    if key == "dynamics":
        return {k: v is not None and v is not False for k, v in value.items()}
    return value


def test_smoke_config_takes_the_paper_code_paths():
    smoke, full = _config(SMOKE), _config(PAPER)
    for section, key in SAME_CODE_PATH:
        assert _value(smoke, section, key) == _value(full, section, key), (section, key)
    # warm-up before the cosine schedule, momentum, 3-channel 32x32 images, GroupNorm
    assert smoke["training"]["lr_warmup_epochs"] > 0 and full["training"]["lr_warmup_epochs"] > 0
    assert smoke["training"]["momentum"] > 0 and full["training"]["momentum"] > 0
    assert smoke["dataset"]["synthetic"]["shape"] == [3, 32, 32]
    assert smoke["model"]["norm_groups"] > 0
    # the parts that need enough of each: spawned oracles, random groups, linear bins, proxies
    assert 0 < smoke["barrier"]["spawn_epoch"] < smoke["training"]["epochs"]
    assert set(smoke["groups"]["privacy_kinds"]) <= set(full["groups"]["privacy_kinds"])
    assert smoke["groups"]["random_groups"] >= 1 and smoke["groups"]["linear_bins"] >= 1
    assert smoke["groups"]["proxy_scores"] and set(smoke["groups"]["proxy_scores"]) <= set(
        full["groups"]["proxy_scores"]
    )
    assert len(smoke["seeds"]) >= 2 and smoke["oracles"]["count"] >= 2


def _planned_rules(config: Path, tmp_path: Path) -> set[str]:
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    command, env = snakemake_command("-n", "--configfile", str(config), cwd=tmp_path)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"^\s*rule (\w+):", result.stdout, re.MULTILINE))


def test_smoke_config_plans_every_rule_of_the_paper_config(tmp_path):
    smoke = _planned_rules(SMOKE, _dir(tmp_path / "smoke"))
    paper = _planned_rules(PAPER, _dir(tmp_path / "paper"))
    assert smoke == paper


def _dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
