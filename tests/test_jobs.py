"""The job registry: one declaration gives the CLI, the rule's shell line and the rule's files."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import snakemake_command, tiny_config

from perinstance import jobs, paths, plan
from perinstance.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "workflow/configs/test.yaml"


@pytest.fixture
def scratch_job():
    """A new job, declared in one place, removed again after the test."""

    @jobs.job(inputs=["groups"], outputs=["group_sizes"])
    def group_sizes(config, job):
        """Number of examples in every forget group."""
        import pandas as pd

        from perinstance import io

        table = io.load_table(job.input.groups).groupby(["score", "group"]).size().rename("n").reset_index()
        return io.save_table(pd.DataFrame(table), job.output.group_sizes)

    yield jobs.JOBS["group_sizes"]
    del jobs.JOBS["group_sizes"]


def test_a_new_job_is_a_command_and_a_shell_line(scratch_job, tmp_path, capsys):
    import pandas as pd

    from perinstance import io

    assert "group-sizes" in build_parser().format_help()
    assert jobs.shell_command("group_sizes") == (
        "{params.cli} group-sizes --config {params.config_file:q} --groups {input.groups:q}"
        " --group-sizes {output.group_sizes:q} > {log:q} 2>&1"
    )
    config = tmp_path / "c.yaml"
    config.write_text("experiment: x\n")
    groups = tmp_path / "groups.csv"
    io.save_table(
        pd.DataFrame({"score": ["a", "a", "b"], "group": ["g", "g", "h"], "index": [1, 2, 3]}), groups
    )
    assert (
        main(
            [
                "group-sizes",
                "--config",
                str(config),
                "--groups",
                str(groups),
                "--group-sizes",
                str(tmp_path / "sizes.csv"),
            ]
        )
        == 0
    )
    sizes = io.load_table(tmp_path / "sizes.csv")
    assert sizes["n"].tolist() == [2, 1]
    assert f"wrote {tmp_path / 'sizes.csv'}" in capsys.readouterr().err


def test_names_used_twice_are_refused():
    with pytest.raises(ValueError, match="used twice or reserved: groups"):

        @jobs.job(inputs=["groups"], outputs=["groups"])
        def clash(config, job):
            """x"""

    with pytest.raises(ValueError, match="declared twice"):

        @jobs.job()
        def train(config, job):
            """x"""


def test_command_line_quotes_and_spreads_lists():
    line = jobs.command_line(
        "figure_steps",
        config_file="c d.yaml",
        values={
            "wildcards": {},
            "input": {"steps": "s.csv", "unlearning_examples": "e", "survival": "v", "curves": "c"},
            "output": {"png": "F.png"},
            "params": {"kind": "privacy-groups", "methods": ["sgld", "finetune"], "label": "F2: it's"},
        },
    )
    words = shlex.split(line)
    assert words[:3] == ["figure-steps", "--config", "c d.yaml"]
    assert words[words.index("--methods") + 1 : words.index("--methods") + 3] == ["sgld", "finetune"]
    assert words[-1] == "F2: it's"


def _dry_run_commands(tmp_path: Path, *extra: str, **privacy) -> list[str]:
    """The `python -m perinstance ...` commands of a dry run of the tiny experiment (with these
    privacy keys changed)."""
    config = TEST_CONFIG
    if privacy:
        raw = yaml.safe_load(TEST_CONFIG.read_text())
        raw["privacy"].update(privacy)
        config = tmp_path / "split.yaml"
        config.write_text(yaml.safe_dump(raw))
    command, env = snakemake_command("-n", "-p", "--configfile", str(config), *extra, cwd=tmp_path)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return [
        line.split("python -m perinstance ", 1)[1].split(" > ", 1)[0]
        for line in result.stdout.splitlines()
        if "python -m perinstance " in line
    ]


@pytest.mark.parametrize("models_per_job", ["all", "one"])
def test_every_rule_command_parses_as_its_job(tmp_path, models_per_job):
    """The shell lines Snakemake renders for the tiny experiment are valid commands of the CLI with
    every declared argument, so the rules and the registry cannot drift apart; a batchable job gets
    one output file per model index, in the indices' order."""
    parser, seen = build_parser(), set()
    # with models_per_job one, the gradient norms split over jobs too (grad_norms_part, merged)
    split = {"norm_jobs": 2} if models_per_job == "one" else {}
    for command in _dry_run_commands(tmp_path, "--config", f"models_per_job={models_per_job}", **split):
        args = parser.parse_args(shlex.split(command))
        declared = jobs.JOBS[args.job]
        for kind, name, arity in declared.arguments():
            value = getattr(args, f"{kind}.{name}")
            assert value is not None and (arity == "*" or value != []), (args.job, name)
        if declared.models:
            indices = getattr(args, f"params.{declared.models_param}")
            assert len(indices) == 1 if models_per_job == "one" else indices == list(range(len(indices)))
            for output in declared.outputs:
                files = getattr(args, f"output.{output.rstrip('+')}")
                assert [f"{declared.models}{i}" in f for i, f in zip(indices, files)] == [True] * len(indices)
        seen.add(args.job)
    expected = set(jobs.JOBS) - (set() if split else {"grad_norms_part"})
    assert seen == expected, expected ^ seen


def test_split_norms_plan_parts_and_a_merge(tmp_path):
    """privacy.norm_jobs: 3 gives every seed three grad_norms_part jobs over disjoint checkpoints
    and a grad_norms job that merges their files."""
    commands = _dry_run_commands(tmp_path, norm_jobs=3)
    parser = build_parser()
    parsed = [parser.parse_args(shlex.split(c)) for c in commands]
    parts = [a for a in parsed if a.job == "grad_norms_part"]
    merges = [a for a in parsed if a.job == "grad_norms"]
    seeds = yaml.safe_load(TEST_CONFIG.read_text())["seeds"]
    assert sorted((a.__dict__["wildcards.seed"], a.__dict__["wildcards.part"]) for a in parts) == [
        (s, p) for s in seeds for p in range(3)
    ]
    for merge in merges:
        seed = merge.__dict__["wildcards.seed"]
        assert sorted(merge.__dict__["input.norm_parts"]) == sorted(
            a.__dict__["output.grad_norms_part"] for a in parts if a.__dict__["wildcards.seed"] == seed
        )


def _written_by_command(command: str) -> list[str]:
    args = build_parser().parse_args(shlex.split(command))
    return sorted(
        f
        for kind, name, _ in jobs.JOBS[args.job].arguments()
        if kind == "output"
        for f in (lambda v: v if isinstance(v, list) else [v])(getattr(args, f"output.{name}"))
    )


def test_batching_models_changes_the_jobs_not_the_files(tmp_path):
    """models_per_job: all and one plan the same files; only the number of jobs differs."""
    batched = _dry_run_commands(tmp_path, "--config", "models_per_job=all")
    single = _dry_run_commands(tmp_path, "--config", "models_per_job=one")
    files = lambda commands: sorted(f for c in commands for f in _written_by_command(c))  # noqa: E731
    assert files(batched) == files(single)
    assert len(batched) < len(single)


def test_a_batched_job_trains_the_same_models_as_one_job_per_model(tmp_path):
    """Several models in one process, one after the other, are bit-identical to one process per
    model: each model seeds its own generators, nothing carries over from the one before."""
    config = tiny_config()
    together = [tmp_path / "together" / f"model{m}.npz" for m in (0, 1)]
    jobs.run("holdout", config, progress=False, params={"models": [0, 1]}, output={"holdout": together})
    alone = tmp_path / "alone" / "model1.npz"
    jobs.run("holdout", config, progress=False, params={"models": [1]}, output={"holdout": [alone]})
    from perinstance import io

    first, second, single = (io.load_npz(p) for p in (*together, alone))
    assert set(second) == set(single)
    for key in single:
        assert np.array_equal(second[key], single[key]), key
    assert not np.array_equal(first["prob_true"], single["prob_true"])


def test_a_batched_job_needs_one_file_per_model(tmp_path):
    with pytest.raises(ValueError, match=r"2 models \(\[0, 1\]\) but 1 files.*one file per model"):
        jobs.run(
            "holdout", tiny_config(), params={"models": [0, 1]}, output={"holdout": [tmp_path / "a.npz"]}
        )
    with pytest.raises(ValueError, match="lists an index twice"):
        jobs.run("holdout", tiny_config(), params={"models": [0, 0]}, output={"holdout": ["a", "b"]})


def test_unlearning_methods_agree_with_the_schema_and_the_registry():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["unlearning"]["properties"]["methods"]["items"]["enum"]
    from perinstance.unlearning import METHODS

    assert tuple(enum) == plan.UNLEARNING_METHODS == tuple(METHODS)
    smk = (REPO / "workflow/rules/common.smk").read_text()
    assert 'method="|".join(plan.UNLEARNING_METHODS)' in smk


def _code_strings(path: Path) -> list[str]:
    """String literals of a module except docstrings; an f-string reads with {} for each field."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    inside_fstrings, texts = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside_fstrings.update(id(v) for v in node.values)
            texts.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and id(node) not in inside_fstrings
        ):
            texts.append(node.value)
    return texts


def _result_file_patterns() -> list[re.Pattern]:
    """The file name of every path the path module gives, as a pattern (placeholders, digits or {})."""
    layout = paths.ResultPaths("EXP")
    files = [layout.log("job"), layout.benchmark("job"), layout.run_config("X")]
    for attribute in dir(layout):
        if attribute.startswith("_") or attribute in (
            "experiment",
            "root",
            "results",
            "figures",
            "log",
            "benchmark",
            "run_config",
        ):
            continue
        value = getattr(layout, attribute)
        if callable(value):
            value = value(*["X"] * (value.__code__.co_argcount - 1))
        files += list(value.values()) if isinstance(value, dict) else [value]
    names = {f.rsplit("/", 1)[-1] for f in files}
    names = {n for n in names if "." in n and n.split(".")[0] not in ("X", "job")}
    return [re.compile(re.escape(n).replace("X", r"(\{[^}]*\}|\d+|X)")) for n in sorted(names)] + [
        re.compile(r"(^|/)results/")
    ]


def test_no_result_path_is_spelled_outside_the_path_module():
    patterns = _result_file_patterns()
    assert any(p.search("groups.csv") for p in patterns) and any(
        p.search("run{}_barrier.pt") for p in patterns
    )
    assert any(p.search("replicate3.npz") for p in patterns)
    offenders = []
    for module in sorted((REPO / "src/perinstance").glob("*.py")):
        if module.name == "paths.py":
            continue
        for text in _code_strings(module):
            offenders += [f"{module.name}: {text!r}" for p in patterns if p.search(text)]
    assert not offenders, "\n".join(offenders)
