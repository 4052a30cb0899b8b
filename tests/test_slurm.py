"""Cluster profiles (workflow/profiles/) and a real SLURM run of the tiny config.

The SLURM test brings up a one-node cluster on this machine (installing Debian's slurm-wlm and
munge when missing, which needs root or passwordless sudo), runs the workflow through
`--profile workflow/profiles/slurm` and compares the results with a local run; see
workflow/scripts/slurm_local_cluster.sh. It runs when PERINSTANCE_TEST_SLURM=1 or CI=true.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import snakemake_command

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow/scripts/slurm_local_cluster.sh"
PROFILES = REPO / "workflow/profiles"
TEST_CONFIG = REPO / "workflow/configs/test.yaml"
PAPER_CONFIG = REPO / "workflow/configs/paper-cifar10.yaml"
SLURM_ENABLED = os.environ.get("PERINSTANCE_TEST_SLURM") == "1" or os.environ.get("CI") == "true"
SLURM_TIMEOUT = 1800  # whole script: apt-get install on a bare machine + both runs (~10 min on 2 cores)
GPU_RULES = (
    "train",
    "holdout",
    "oracle",
    "spawned_oracle",
    "unlearn",
    "grad_norms",
    "grad_norms_part",
    "barrier",
)
# run in the Snakemake process on a cluster (the Snakefile's localrules)
SMALL_TABLE_AND_FIGURE_RULES = {
    "figure",
    "figure_barriers",
    "claims",
    "groups",
    "scores",
    "correlations",
    "steps",
    "budget",
}
GROUPED_RULES = {"oracle": "oracles", "holdout": "holdouts", "unlearn": "unlearning"}


def snakemake(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    if not (cwd / "config.yaml").exists():
        (cwd / "config.yaml").write_text((REPO / "config.yaml").read_text())
    command, base_env = snakemake_command(*args, cwd=cwd)
    return subprocess.run(
        command, cwd=cwd, env={**base_env, **(env or {})}, capture_output=True, text=True, timeout=300
    )


def job_resources(dry_run_output: str) -> dict[str, dict[str, str]]:
    """rule -> resources of its first job, from `snakemake -n` output (jobs inside group jobs too)."""
    resources = {}
    for block in re.split(r"\n(?=\s*rule \w+:)", dry_run_output):
        rule = re.match(r"\s*rule (\w+):", block)
        line = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        if rule and line and rule.group(1) not in resources:
            resources[rule.group(1)] = dict(item.split("=", 1) for item in line.group(1).split(", "))
    return resources


def test_default_profile_dry_run(tmp_path):
    result = snakemake(
        "-n", "--profile", str(PROFILES / "default"), "--configfile", str(TEST_CONFIG), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Using profile" in result.stderr


def test_slurm_profile_resources(tmp_path):
    env = {
        "PERINSTANCE_SLURM_PARTITION": "gpu-part",
        "PERINSTANCE_SLURM_ACCOUNT": "lab42",
        "PERINSTANCE_SLURM_GPUS": "1",
    }
    result = snakemake(
        "-n", "--profile", str(PROFILES / "slurm"), "--configfile", str(TEST_CONFIG), cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resources = job_resources(result.stdout)
    train = resources["train"]
    assert (train["mem_mb"], train["runtime"], train["gpu"]) == ("8000", "480", "1")  # attempt 1
    assert train["cpus_per_task"] == str(yaml.safe_load(TEST_CONFIG.read_text())["threads"])
    for rule, res in resources.items():
        if rule == "all":
            continue
        assert res["slurm_partition"] == "gpu-part" and res["slurm_account"] == "lab42", rule
        assert ("gpu" in res) == (rule in GPU_RULES), rule

    # without the variables: no partition, account or GPU (the cluster's defaults)
    plain = snakemake(
        "-n",
        "--profile",
        str(PROFILES / "slurm"),
        "--configfile",
        str(TEST_CONFIG),
        cwd=tmp_path,
        env={key: "" for key in env},
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    for rule, res in job_resources(plain.stdout).items():
        assert not {"gpu", "slurm_partition", "slurm_account"} & set(res), rule


def dry_run_jobs(output: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """From `snakemake -n` output: the rules of the jobs planned on their own, and each group
    job's name with the rules of its jobs."""
    single, groups = [], []
    for line in output.splitlines():
        if match := re.match(r"^rule (\w+):", line):
            single.append(match.group(1))
        elif match := re.search(r"Group job (\w+) ", line):
            groups.append((match.group(1), []))
        elif (match := re.match(r"^\s+rule (\w+):", line)) and groups:
            groups[-1][1].append(match.group(1))
    return single, groups


def local_rules() -> set[str]:
    """The Snakefile's localrules, as Snakemake's API reads them (a dry run does not print them)."""
    code = """
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(ResourceSettings(), snakefile=Path(sys.argv[1]), workdir=Path(sys.argv[2]))
    print(" ".join(sorted(workflow._workflow._localrules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "Snakefile"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split())


def test_paper_config_on_slurm_groups_model_jobs_and_keeps_small_jobs_local(tmp_path):
    """At paper scale the profile submits far fewer jobs: oracles, holdout models and unlearning
    runs share submissions, figures and small tables run in the Snakemake process."""
    result = snakemake(
        "-n", "--profile", str(PROFILES / "slurm"), "--configfile", str(PAPER_CONFIG), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single, groups = dry_run_jobs(result.stdout)
    local = local_rules()
    assert SMALL_TABLE_AND_FIGURE_RULES <= local
    assert not local & (set(GPU_RULES) | {"privacy_loss", "robustness", "proxies", "difficulty"})
    profile = yaml.safe_load((PROFILES / "slurm/profile.yaml").read_text())
    components = dict(item.split("=") for item in profile["group-components"])
    assert not set(single) & set(GROUPED_RULES), "a model job of a grouped rule was planned alone"
    for name, rules in groups:
        assert {GROUPED_RULES[r] for r in rules} == {name}, (name, rules)
        assert 1 <= len(rules) <= int(components[name]), (name, len(rules))
    jobs = len(single) - 1 + sum(len(rules) for _, rules in groups)  # without rule `all`
    submissions = sum(rule not in local for rule in single) + len(groups)
    expected = sum(
        -(-sum(r == rule for _, rules in groups for r in rules) // int(components[GROUPED_RULES[rule]]))
        for rule in GROUPED_RULES
    )
    assert len(groups) == expected  # every group full but the last of each rule
    assert submissions < jobs / 3, (submissions, jobs)
    print(f"paper-cifar10 on SLURM: {jobs} jobs, {submissions} sbatch submissions ({len(groups)} grouped)")


def test_slurm_profile_sizes_every_rule(tmp_path):
    result = snakemake("--list-rules", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rules = {line.split()[0] for line in result.stdout.splitlines() if line.strip()} - {"all"}
    text = (PROFILES / "slurm/profile.yaml").read_text()
    listed = set(re.findall(r"^  (\w+):", text.split("\nset-resources:", 1)[1], re.MULTILINE))
    missing = sorted(rules - listed)
    assert not missing, f"add {missing} to set-resources in workflow/profiles/slurm/profile.yaml"
    stale = sorted(listed - rules)
    assert not stale, (
        f"remove {stale} from set-resources in workflow/profiles/slurm/profile.yaml (no such rule)"
    )


@pytest.mark.slurm
@pytest.mark.skipif(not SLURM_ENABLED, reason="set PERINSTANCE_TEST_SLURM=1 to run (CI=true does)")
def test_paper_smoke_workflow_on_slurm_equals_local_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "SNAKEMAKE_TIMEOUT": "1500"}
    start = time.monotonic()
    process = subprocess.Popen(
        ["bash", str(SCRIPT), str(tmp_path / "work")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=SLURM_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the script cancel its jobs and stop the daemons it started
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"timed out after {SLURM_TIMEOUT} s:\n{output[-6000:]}")
    elapsed = time.monotonic() - start
    assert process.returncode == 0, output[-6000:]
    summary = re.search(
        r"SLURM run: (\d+) jobs submitted \((\d+) grouped\), (\d+) local jobs, states: \d+ COMPLETED$",
        output,
        re.MULTILINE,
    )
    assert summary, output[-6000:]
    submitted, grouped, local = map(int, summary.groups())
    # the paper-smoke config through the profile: grouped model jobs, figures and tables local
    assert grouped > 0 and local >= len(SMALL_TABLE_AND_FIGURE_RULES), output[-6000:]
    assert "identical:" in output, output
    print(f"SLURM end-to-end check took {elapsed:.0f} s")
