from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

from perinstance.config import validate_config

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(*args: str, cwd: Path) -> tuple[list[str], dict]:
    """Snakemake on this repository's Snakefile from `cwd`, and its environment: the rules call
    `python -m perinstance`, so the interpreter running the tests comes first on PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(cwd),
    ]
    return [*command, *args], env


def tiny_config(**training_overrides) -> dict:
    """The CI config (workflow/configs/test.yaml), validated, with training overrides."""
    raw = yaml.safe_load((REPO / "workflow/configs/test.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["training"].update(training_overrides)
    # the barrier's spawned oracle starts from an epoch of training: keep it inside shorter runs
    epochs = raw["training"].get("epochs", 1)
    raw["barrier"]["spawn_epoch"] = min(raw["barrier"].get("spawn_epoch", 0), epochs - 1)
    return validate_config(raw)


@pytest.fixture
def config() -> dict:
    return tiny_config()
