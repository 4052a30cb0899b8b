from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from perinstance.config import validate_config

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "workflow/configs/test.yaml"


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


# columns that measure time, not results: they differ between any two runs of the same config
TIMING_COLUMNS = {"history.csv": "seconds"}  # a training run's wall time up to each evaluation


def _table_digest(path: Path) -> str:
    data = path.read_bytes()
    if path.name in TIMING_COLUMNS:  # every byte but that column's (plain numeric CSV, no quoting)
        lines = data.decode().splitlines(keepends=True)
        header = next(i for i, line in enumerate(lines) if not line.startswith("# "))
        drop = lines[header].rstrip("\r\n").split(",").index(TIMING_COLUMNS[path.name])
        kept = [",".join(f for i, f in enumerate(line.split(",")) if i != drop) for line in lines[header:]]
        data = "".join(lines[:header] + kept).encode()
    return hashlib.sha256(data).hexdigest()


def result_tables(cwd: Path, experiment: str = "test") -> dict[str, str]:
    """sha256 of every table of a finished run in `cwd`: each CSV and Parquet file under
    results/<experiment> and figures/<experiment>; not the logs and benchmarks (times, not results)
    nor the TIMING_COLUMNS."""
    tables = {}
    for top in (cwd / "results" / experiment, cwd / "figures" / experiment):
        for path in sorted(top.rglob("*")):
            relative = path.relative_to(cwd)
            if path.suffix not in (".csv", ".parquet") or relative.parts[2] in ("logs", "benchmarks"):
                continue
            tables[str(relative)] = _table_digest(path)
    return tables


@pytest.fixture(scope="session")
def tiny_workflow_run(tmp_path_factory) -> dict:
    """The tiny config (workflow/configs/test.yaml) run once through Snakemake, uninterrupted, with a
    second invocation of another config started while it runs (refused: the directory is locked).

    Shared by tests/test_workflow.py and tests/test_resume_workflow.py (the reference of a resumed
    run): "tables" holds result_tables() taken as the run ends, before any test touches the tree.
    """
    cwd = tmp_path_factory.mktemp("tiny")
    shutil.copy(REPO / "config.yaml", cwd / "config.yaml")  # what a bare `snakemake` would read
    modified = yaml.safe_load(TEST_CONFIG.read_text())
    modified["privacy"]["beta"] = 50
    modified["unlearning"]["k_max"] = 20
    modified["unlearning"]["gap_budgets"] = [10, 20]  # within the shorter runs
    (cwd / "modified.yaml").write_text(yaml.safe_dump(modified))
    command, env = snakemake_command("--cores", "2", "--configfile", str(TEST_CONFIG), cwd=cwd)
    first = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while not list((cwd / "results/test/configs").glob("*.yaml")):  # written once the run holds the lock
        assert first.poll() is None and time.monotonic() < deadline, (
            "the first run ended before it started jobs"
        )
        time.sleep(0.2)
    second_command, env = snakemake_command(
        "--cores", "1", "--configfile", str(cwd / "modified.yaml"), cwd=cwd
    )
    second = subprocess.run(second_command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output, _ = first.communicate(timeout=900)
    tables = result_tables(cwd) if first.returncode == 0 else {}
    return {"cwd": cwd, "returncode": first.returncode, "output": output, "second": second, "tables": tables}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Order and group the tests for `pytest -n 3 --dist loadgroup` (the Makefile's `make test`).

    Tests that share the session-scoped tiny_workflow_run run in one xdist group, so the run it
    stands for happens once, not once per worker. The long end-to-end tests (the SLURM cluster
    first, then the other `slow` ones) are collected first, so they start at once and the short
    tests fill the other worker around them instead of queueing behind them at the end.
    """
    for item in items:
        if "tiny_workflow_run" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("tiny_workflow_run"))

    def start_order(item) -> int:
        if item.get_closest_marker("slurm"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=start_order)  # stable: the file order within each class
