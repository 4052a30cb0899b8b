"""The tiny config (workflow/configs/test.yaml) through Snakemake, in a temporary directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import snakemake_command

from perinstance import io
from perinstance.config import load_config, validate_config
from perinstance.privacy_scores import privacy_tables

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "workflow/configs/test.yaml"

# the figures the tiny experiment draws
TEST_FIGURES = (
    "F0_training",
    "F1_privacy_loss",
    "F2_steps_sgld",
    "F3_steps_finetune",
    "F4_proxy_correlation",
    "F5_hard_groups",
    "F6_loss_barriers",
    "F7_robustness",
    "F8_difficulty",
    "F9_methods",
)


def _command(*args: str, cwd: Path) -> tuple[list[str], dict]:
    """Snakemake on this repository's Snakefile, from `cwd`; without --configfile it reads cwd/config.yaml."""
    if not (cwd / "config.yaml").exists():
        shutil.copy(REPO / "config.yaml", cwd / "config.yaml")
    return snakemake_command(*args, cwd=cwd)


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command, env = _command(*args, cwd=cwd)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_lint_is_clean(tmp_path):
    result = snakemake("--lint", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("models_per_job", ["all", "one"])
def test_dry_run_lists_one_train_job_per_seed(tmp_path, models_per_job):
    result = snakemake(
        "-n",
        "--configfile",
        str(REPO / "config.yaml"),
        "--config",
        f"models_per_job={models_per_job}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    jobs = {k: str(v) for k, v in _job_counts(result.stdout).items()}
    one = models_per_job == "one"
    assert jobs["train"] == "3" and jobs["grad_norms"] == "3" and jobs["holdout"] == ("8" if one else "1")
    assert jobs["figure"] == "9"  # F0-F5, F7-F9 (F6 has its own rule)
    # one per privacy-loss group (low, mid, high, top1-top7) and per random group
    assert jobs["spawned_oracle"] == jobs["barrier"] == "11"
    for single in (
        "robustness",
        "figure_barriers",
        "difficulty",
        "claims",
        "privacy_loss",
        "proxies",
        "scores",
        "correlations",
        "groups",
        "steps",
        "budget",
    ):
        assert jobs[single] == "1", single
    # 15 groups (low, mid, high, top1-top7; 4 proxies' high; 1 random) x 3 oracles, 3 per job or 1
    assert jobs["oracle"] == ("45" if one else "15")
    # (10 privacy groups x 7 methods + 5 comparison groups x finetune) x 2 runs, 2 per job or 1
    assert jobs["unlearn"] == ("150" if one else "75")


def test_committed_figures_without_results_rerun_the_experiment(tmp_path):
    # A fresh clone holds figures/default from git but no results: the figures must not count as done.
    figures = tmp_path / "figures" / "default"
    shutil.copytree(REPO / "figures" / "default", figures)
    day_ago = os.path.getmtime(figures) - 86400
    for path in figures.iterdir():
        os.utime(path, (day_ago, day_ago))
    result = snakemake("-n", "--configfile", str(REPO / "config.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = _job_counts(result.stdout)
    assert jobs["train"] == 3 and jobs["figure"] == 9 and jobs["oracle"] == 15 and jobs["claims"] == 1


def _job_counts(stdout: str) -> dict[str, int]:
    return {
        line.split()[0]: int(line.split()[1])
        for line in stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }


@pytest.mark.parametrize("name, seeds", [("paper-cifar10", 5), ("paper-svhn", 5)])
def test_paper_configs_dry_run(tmp_path, name, seeds):
    result = snakemake("-n", "--configfile", str(REPO / f"workflow/configs/{name}.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_counts(result.stdout)
    assert jobs["train"] == jobs["grad_norms"] == seeds and jobs["holdout"] == 16
    # 6 privacy-loss groups (low, mid, high, top1-3) + 4 proxies' high + 2 random, 8 oracles each
    assert jobs["oracle"] == 12 * 8
    # 6 privacy groups x 3 methods x 3 seeds + 6 comparison groups x finetune x 3 seeds
    assert jobs["unlearn"] == 6 * 3 * 3 + 6 * 3
    assert jobs["spawned_oracle"] == jobs["barrier"] == 8  # 6 privacy-loss groups + 2 random groups


def test_bad_config_fails_before_running(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEST_CONFIG.read_text().replace("epochs: 3", "epochz: 3"))
    result = snakemake("-n", "--configfile", str(bad), cwd=tmp_path)
    assert result.returncode != 0
    assert "epochz" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def tiny_run(tiny_workflow_run):
    """The tiny workflow run once, with a second invocation of another config started while it runs
    (tests/conftest.py: shared with the kill-and-resume test)."""
    return tiny_workflow_run


def test_a_refused_second_invocation_changes_nothing(tiny_run):
    cwd = tiny_run["cwd"]
    assert tiny_run["returncode"] == 0, tiny_run["output"][-3000:]
    second = tiny_run["second"]
    assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
    configs = list((cwd / "results/test/configs").glob("*.yaml"))
    assert len(configs) == 1 and yaml.safe_load(configs[0].read_text()) == load_config(TEST_CONFIG)
    # every job read the first run's config: k_max 40 and privacy losses at beta 200, recomputed here
    steps = io.load_table(cwd / "results/test/steps.csv")
    assert (steps["k_max"] == 40).all()
    runs = [
        (s, cwd / f"results/test/train/seed{s}", cwd / f"results/test/privacy/seed{s}/norms.npz")
        for s in (0, 1)
    ]
    expected = privacy_tables(load_config(TEST_CONFIG), runs)["privacy"]
    table = pd.read_parquet(cwd / "results/test/privacy/privacy_loss.parquet")
    pd.testing.assert_frame_equal(table, expected)


def test_tiny_workflow_end_to_end(tiny_run):
    tmp_path = tiny_run["cwd"]
    assert tiny_run["returncode"] == 0, tiny_run["output"][-3000:]
    figure_dir = tmp_path / "figures/test"
    for figure in TEST_FIGURES:
        for suffix in ("png", "pdf", "csv"):
            assert (figure_dir / f"{figure}.{suffix}").stat().st_size > 0
    assert "| claim | method |" in (figure_dir / "results.md").read_text()
    examples = pd.read_parquet(tmp_path / "results/test/unlearning_examples.parquet")
    # one row per (run, forget example): 22 runs of 10 examples;
    # every example that needed unlearning has its gaps
    assert len(examples) == 220 and examples["steps"].between(0, 40).all()
    needed = examples[~examples["inside_at_step0"]]
    assert needed["remaining_gap_40"].notna().all() and needed["mean_gap_40"].notna().all()
    assert examples.loc[examples["inside_at_step0"], "remaining_gap_40"].isna().all()
    scores = pd.read_parquet(tmp_path / "results/test/scores.parquet")
    assert len(scores) == 180 and scores["index"].is_unique
    for column in (
        "privacy_loss",
        "privacy_loss_4alpha",
        "privacy_loss_online",
        "privacy_loss_seed0",
        "privacy_loss_seed1",
    ):
        assert scores[column].notna().all() and scores[column].std() > 0, column
    for column in ("el2n", "forgetting_events", "learning_speed", "cscore_holdout"):
        assert column in scores, column
    steps = io.load_table(tmp_path / "results/test/steps.csv")
    # test.yaml: low, high, top1 x every method + el2n-high x finetune, one seed each
    methods = ["finetune", "sgld", "l1sparse", "neggrad_plus", "scrub", "random_label", "salun"]
    assert len(steps) == 3 * 7 + 1 and set(steps["method"]) == set(methods)
    assert steps["steps"].between(0, 40).all() and steps["censored"].isin([True, False]).all()
    assert steps["tow"].between(0, 1).all() and steps["retain_accuracy"].between(0, 1).all()
    # test.yaml sets unlearning.stop_when_overshot: every run says whether the rule fired
    assert steps["overshot"].isin([True, False]).all()
    f9 = io.load_table(figure_dir / "F9_methods.csv")
    assert sorted(f9["method"]) == sorted(methods) and (f9["tow_runs"] == 1).all()
    assert f9["overshot_runs"].between(0, 1).all()
    barriers = io.load_table(tmp_path / "results/test/barriers/barriers.csv")
    assert (
        set(barriers["pair"]) == {"unlearned_finetune", "spawned_oracle"} and (barriers["barrier"] >= 0).all()
    )
    table = io.load_table(figure_dir / "F0_training.csv")
    assert sorted(table["seed"].unique()) == [0, 1]
    assert set(table["split"]) == {"train", "test"}
    for seed in (0, 1):
        run = tmp_path / f"results/test/train/seed{seed}"
        assert (run / "model.pt").is_file() and (run / "dynamics.npz").is_file()
        assert (tmp_path / f"results/test/logs/train/seed{seed}.log").is_file()
        assert (tmp_path / f"results/test/benchmarks/train/seed{seed}.tsv").is_file()
    # the HTML report holds every figure, and making it touches no result
    results_before = _tree(tmp_path / "results")
    report = snakemake("--configfile", str(TEST_CONFIG), "--report", "report.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    for figure in TEST_FIGURES:
        assert f"{figure}.png" in html, figure
    assert _tree(tmp_path / "results") == results_before
    # a rerun finds everything complete and does nothing
    again = snakemake("--cores", "2", "--configfile", str(TEST_CONFIG), cwd=tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_config_change_reruns_only_what_reads_it(tiny_run):
    cwd = tiny_run["cwd"]
    changed = yaml.safe_load(TEST_CONFIG.read_text())
    changed["unlearning"]["k_max"] = 45
    (cwd / "changed.yaml").write_text(yaml.safe_dump(changed))
    result = snakemake("-n", "--configfile", str(cwd / "changed.yaml"), cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_counts(result.stdout)
    assert jobs["unlearn"] == 22 and jobs["steps"] == 1
    for untouched in ("train", "grad_norms", "privacy_loss", "holdout", "oracle", "groups"):
        assert untouched not in jobs, untouched


def _tree(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")}


def test_dry_run_lint_and_unlock_write_no_result(tmp_path):
    for args in (["-n"], ["--lint"], ["--unlock"], ["-n", "--configfile", str(TEST_CONFIG)]):
        result = snakemake(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr[-2000:])
    assert not (tmp_path / "results").exists() and not (tmp_path / "figures").exists()


def test_a_configfile_stands_on_its_own(tmp_path):
    # config.yaml sits in the working directory; keys the --configfile omits take the schema's defaults
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("experiment: minimal\n")
    result = snakemake("-n", "-p", "--configfile", str(minimal), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    text = yaml.safe_dump(validate_config({"experiment": "minimal"}), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    assert f"results/minimal/configs/{digest}.yaml" in result.stdout
    assert "results/default" not in result.stdout


def test_a_moved_checkout_reruns_nothing(tiny_run, tmp_path):
    # jobs call the package by the checkout's absolute path; another checkout of the same code must
    # find the finished results up to date
    moved = tmp_path / "moved"
    moved.mkdir()
    for part in ("Snakefile", "config.yaml", "src", "workflow", "envs"):
        source = REPO / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, moved / part)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(moved / "Snakefile"),
        "--directory",
        str(tiny_run["cwd"]),
        "-n",
        "--configfile",
        str(TEST_CONFIG),
    ]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(
        command, cwd=tiny_run["cwd"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_every_table_and_figure_says_what_produced_it(tiny_run):
    # each CSV table and figure source table (and each PNG) carries the provenance of the run's
    # config: its digest is the name of the run config file every job read
    cwd = tiny_run["cwd"]
    assert tiny_run["returncode"] == 0, tiny_run["output"][-3000:]
    (run_config,) = (cwd / "results/test/configs").glob("*.yaml")
    config = load_config(run_config)
    results = cwd / "results/test"
    tables = [
        p
        for p in sorted(results.rglob("*"))
        if p.suffix in (".csv", ".parquet") and not {"benchmarks", "logs"} & set(p.relative_to(results).parts)
    ]
    figures = sorted((cwd / "figures/test").glob("*.csv")) + sorted((cwd / "figures/test").glob("*.png"))
    assert len(tables) > 10 and len(figures) >= 2 * len(TEST_FIGURES)
    for path in tables + figures:
        record = io.read_provenance(path)
        assert record is not None, path
        assert record.config_digest == run_config.stem, path
        assert record.experiment == "test" and record.seeds == tuple(config["seeds"]), path
        assert record.unlearning_seeds == config["unlearning"]["seeds"], path
