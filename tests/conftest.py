from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from perinstance.config import validate_config

REPO = Path(__file__).resolve().parents[1]


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
