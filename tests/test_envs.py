"""Conda environments and rule conventions (conda cannot create environments here, so check them statically)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib", "seaborn-base": "seaborn"}
NOT_IN_RULE_ENVS = {"snakemake", "snakemake-executor-plugin-slurm"}  # run the workflow; rules never import them


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].strip().lower()


def pyproject_packages() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in project["dependencies"]}


def env_packages(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    assert "conda-forge" in env["channels"], f"{path} must use conda-forge"
    names = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    names.discard("python")
    return {CONDA_TO_PYPI.get(n, n) for n in names}


def test_torch_env_has_exactly_the_package_dependencies():
    assert env_packages(REPO / "envs/torch.yaml") == pyproject_packages() - NOT_IN_RULE_ENVS


def test_every_env_lists_only_package_dependencies():
    for path in sorted((REPO / "envs").glob("*.yaml")):
        extra = env_packages(path) - pyproject_packages()
        assert not extra, f"{path.name} lists packages pyproject.toml does not: {extra}"


def test_every_rule_has_log_benchmark_conda_and_resources():
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        blocks = re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M)
        for block in blocks:
            header = re.match(r"rule (\w+):", block)
            if not header:
                continue
            for directive in ("log:", "benchmark:", "conda:", "resources:"):
                assert re.search(rf"^\s+{directive}", block, flags=re.M), f"{smk.name}: rule {header[1]} has no {directive}"
            env = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            assert env and (smk.parent / env[1]).resolve().is_file(), f"rule {header[1]}: conda env missing"
