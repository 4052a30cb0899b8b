"""CLI misuse and bad files: exit code 2, one line naming the argument or file, nothing written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_config

from perinstance import io
from perinstance.cli import main
from perinstance.data import load_dataset


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Two finished two-epoch runs of the tiny config and their norms, made through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    config = tiny_config(epochs=2)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    for seed in (0, 1):
        run = root / f"train/seed{seed}"
        assert (
            main(
                [
                    "train",
                    "--config",
                    str(config_path),
                    "--seed",
                    str(seed),
                    "--training-run",
                    str(run),
                    "--no-progress",
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "grad-norms",
                    "--config",
                    str(config_path),
                    "--seed",
                    str(seed),
                    "--training-run",
                    str(run),
                    "--grad-norms",
                    str(root / f"norms{seed}.npz"),
                    "--no-progress",
                ]
            )
            == 0
        )
    dataset = load_dataset(**config["dataset"])
    index, label = dataset.train.index.numpy(), dataset.train.y.numpy()
    groups = pd.DataFrame(
        {
            "score": "privacy_loss",
            "group": ["high"] * 10 + ["low"] * 10,
            "index": index[:20],
            "label": label[:20],
            "rank": np.arange(20),
        }
    )
    io.save_table(groups, root / "groups.csv")
    # an oracle evaluation of group `low`, offered to an unlearning run of group `high`
    io.save_npz(
        root / "oracle_low.npz",
        forget_index=index[10:20],
        forget_losses=np.ones(10),
        forget_phi=np.zeros(10),
        forget_correct=np.ones(10, bool),
        test_losses=np.ones(3),
        test_correct=np.ones(3, bool),
    )
    return {"root": root, "config": str(config_path)}


def _refused(capsys, argv, needle, *, unwritten=()):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    for path in unwritten:
        assert not path.exists(), path
    return err


def test_negative_seed(workspace, capsys):
    out = workspace["root"] / "neg"
    _refused(
        capsys,
        ["train", "--config", workspace["config"], "--seed", "-1", "--training-run", str(out)],
        "--seed",
        unwritten=[out],
    )


def test_non_integer_replicate(workspace, capsys):
    _refused(
        capsys,
        [
            "oracle",
            "--config",
            workspace["config"],
            "--groups",
            "g.csv",
            "--score",
            "s",
            "--group",
            "g",
            "--replicates",
            "x",
            "--oracle-model",
            "m.pt",
            "--oracle-evaluation",
            "o.npz",
        ],
        "--replicates",
    )


def test_unknown_method(workspace, capsys):
    root = workspace["root"]
    _refused(
        capsys,
        [
            "unlearn",
            "--config",
            workspace["config"],
            "--groups",
            "g.csv",
            "--method",
            "retrain",
            "--score",
            "s",
            "--group",
            "g",
            "--runs",
            "0",
            "--originals",
            str(root / "train/seed0"),
            "--oracles",
            "o.npz",
            "--curve",
            "c.csv",
            "--examples",
            "e.parquet",
            "--final",
            "f.npz",
            "--model",
            "m.pt",
            "--barrier-model",
            "b.pt",
        ],
        "--method",
    )


def test_training_run_of_another_seed(workspace, capsys):
    root = workspace["root"]
    out = root / "norms_wrong.npz"
    _refused(
        capsys,
        [
            "grad-norms",
            "--config",
            workspace["config"],
            "--seed",
            "1",
            "--training-run",
            str(root / "train/seed0"),
            "--grad-norms",
            str(out),
            "--no-progress",
        ],
        "holds seed 0, not seed 1",
        unwritten=[out],
    )


def test_runs_and_norms_swapped(workspace, capsys):
    root = workspace["root"]
    out = root / "privacy_swapped"
    _refused(
        capsys,
        [
            "privacy-loss",
            "--config",
            workspace["config"],
            "--training-runs",
            str(root / "train/seed0"),
            str(root / "train/seed1"),
            "--grad-norms",
            str(root / "norms1.npz"),
            str(root / "norms0.npz"),
            "--privacy-table",
            str(out / "p.parquet"),
            "--privacy-long",
            str(out / "l.parquet"),
            "--worst-case",
            str(out / "w.csv"),
        ],
        "norms1.npz does not belong to run",
        unwritten=[out],
    )


def test_runs_and_norms_of_different_lengths(workspace, capsys):
    root = workspace["root"]
    _refused(
        capsys,
        [
            "privacy-loss",
            "--config",
            workspace["config"],
            "--training-runs",
            str(root / "train/seed0"),
            "--grad-norms",
            str(root / "norms0.npz"),
            str(root / "norms1.npz"),
            "--privacy-table",
            "p.parquet",
            "--privacy-long",
            "l.parquet",
            "--worst-case",
            "w.csv",
        ],
        "--training-runs and --grad-norms",
    )


def test_oracle_of_another_group(workspace, capsys):
    root = workspace["root"]
    outputs = {
        name: root / f"unlearn_{name}"
        for name in ("curve.csv", "forget.parquet", "final.npz", "model.pt", "barrier.pt")
    }
    _refused(
        capsys,
        [
            "unlearn",
            "--config",
            workspace["config"],
            "--groups",
            str(root / "groups.csv"),
            "--method",
            "finetune",
            "--score",
            "privacy_loss",
            "--group",
            "high",
            "--runs",
            "0",
            "--originals",
            str(root / "train/seed0"),
            "--oracles",
            str(root / "oracle_low.npz"),
            "--curve",
            str(outputs["curve.csv"]),
            "--examples",
            str(outputs["forget.parquet"]),
            "--final",
            str(outputs["final.npz"]),
            "--model",
            str(outputs["model.pt"]),
            "--barrier-model",
            str(outputs["barrier.pt"]),
        ],
        "oracle_low.npz was not retrained without group privacy_loss/high",
        unwritten=outputs.values(),
    )


def test_group_missing_from_groups_table(workspace, capsys):
    root = workspace["root"]
    _refused(
        capsys,
        [
            "oracle",
            "--config",
            workspace["config"],
            "--groups",
            str(root / "groups.csv"),
            "--score",
            "el2n",
            "--group",
            "high",
            "--replicates",
            "0",
            "--oracle-model",
            str(root / "o.pt"),
            "--oracle-evaluation",
            str(root / "o.npz"),
        ],
        "groups.csv: no forget group el2n/high",
        unwritten=[root / "o.pt", root / "o.npz"],
    )


def test_not_a_groups_table(workspace, capsys):
    root = workspace["root"]
    io.save_table(pd.DataFrame({"a": [1]}), root / "other.csv")
    _refused(
        capsys,
        [
            "oracle",
            "--config",
            workspace["config"],
            "--groups",
            str(root / "other.csv"),
            "--score",
            "privacy_loss",
            "--group",
            "high",
            "--replicates",
            "0",
            "--oracle-model",
            str(root / "o.pt"),
            "--oracle-evaluation",
            str(root / "o.npz"),
        ],
        "other.csv: not a groups table",
    )


def test_missing_scores_table(workspace, capsys):
    root = workspace["root"]
    _refused(
        capsys,
        [
            "groups",
            "--config",
            workspace["config"],
            "--scores",
            str(root / "nope.parquet"),
            "--groups",
            str(root / "g2.csv"),
        ],
        "nope.parquet does not exist",
        unwritten=[root / "g2.csv"],
    )


def test_endpoints_without_their_methods(workspace, capsys):
    root = workspace["root"]
    _refused(
        capsys,
        [
            "barrier",
            "--config",
            workspace["config"],
            "--groups",
            str(root / "groups.csv"),
            "--score",
            "privacy_loss",
            "--group",
            "high",
            "--original",
            str(root / "train/seed0"),
            "--unlearned",
            "a.pt",
            "b.pt",
            "--spawned",
            "s.pt",
            "--methods",
            "finetune",
            "--barrier-paths",
            str(root / "b.parquet"),
        ],
        "--methods and --unlearned",
        unwritten=[root / "b.parquet"],
    )


def test_non_finite_config_value(workspace, capsys):
    root = workspace["root"]
    bad = root / "nan.yaml"
    config = yaml.safe_load(open(workspace["config"]))
    config["privacy"]["beta"] = float("nan")
    bad.write_text(yaml.safe_dump(config))
    _refused(
        capsys,
        ["groups", "--config", str(bad), "--scores", "s.parquet", "--groups", str(root / "g3.csv")],
        "'privacy.beta': must be a finite number",
        unwritten=[root / "g3.csv"],
    )


def test_train_out_is_an_unrelated_directory(workspace, capsys):
    root = workspace["root"]
    precious = root / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    _refused(
        capsys,
        [
            "train",
            "--config",
            workspace["config"],
            "--seed",
            "0",
            "--training-run",
            str(precious),
            "--no-progress",
        ],
        "--force",
    )
    assert (precious / "thesis.tex").read_text() == "years of work"
