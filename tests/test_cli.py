from __future__ import annotations

import pytest

from perinstance.cli import build_parser, main
from perinstance.jobs import JOBS


def test_every_job_is_a_command_with_help():
    parser = build_parser()
    for declared in JOBS.values():
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([declared.command, "--help"])
        assert exit_.value.code == 0


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    code = main(
        ["groups", "--config", str(tmp_path / "nope.yaml"), "--scores", "s.parquet", "--groups", "g.csv"]
    )
    assert code == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_bad_config_key_is_reported_with_its_name(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("experiment: x\ntraining: {epocks: 3}\n")
    assert main(["groups", "--config", str(config), "--scores", "s.parquet", "--groups", "g.csv"]) == 2
    assert "training.epocks" in capsys.readouterr().err


def test_a_training_run_names_its_own_seed(tmp_path, capsys):
    """The seed of a run comes from the run's metadata, never from its directory name."""
    config = tmp_path / "c.yaml"
    config.write_text("experiment: x\n")
    (tmp_path / "seed0").mkdir()
    code = main(
        [
            "figure-training",
            "--config",
            str(config),
            "--training-runs",
            str(tmp_path / "seed0"),
            "--png",
            str(tmp_path / "f.png"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "seed0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.png").exists()
